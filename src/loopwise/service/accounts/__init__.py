"""The account service's resources: one module per resource, routes and SQL side by side.

    users        POST /register, GET/PATCH /users/me, GET /users/{id}
    auth         POST /login, POST /logout
    orders       POST/GET /users/me/orders, GET /users/me/orders/{id}
    preferences  GET/PUT /users/me/preferences
    overview     GET /users/me/overview
    passwords    argon2id off the event loop (a lifespan resource)
    sessions     opaque bearer tokens, one-query authentication
    throttle     login failure limits in PostgreSQL

``accounts.routes.router`` mounts them all.
"""
