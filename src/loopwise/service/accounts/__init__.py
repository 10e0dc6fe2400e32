"""The account service's resources: one module per resource, routes and SQL side by side.

    users        POST /register, GET/PATCH /users/me, GET /users/{id}
    auth         POST /login, POST /logout
    orders       POST/GET /users/me/orders, GET /users/me/orders/{id}
    preferences  GET/PUT /users/me/preferences
    overview     GET /users/me/overview
    verification POST /verify-email, POST /verify-email/resend
    password_reset  POST /password-reset, POST /password-reset/confirm
    deletion     DELETE /users/me
    emails       the account emails' jobs: verification, reset, deletion notice
    tokens       one-time tokens mailed to users, hashed at rest
    email_throttle  limits on requests that send email, in PostgreSQL
    fixed_windows   fixed-window counters in PostgreSQL, under both throttles
    operators    what `loopwise users` does: find, show, disable, end sessions
    throttle     login failure limits in PostgreSQL

``accounts.routes.router`` mounts them all. Password hashing and sessions live in
``service.identity``, the overview's downstream clients in ``service.downstreams``.
"""
