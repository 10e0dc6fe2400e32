"""Seed a realistic data set in seconds: bulk SQL inside PostgreSQL, not thousands of calls.

10K users sharing one precomputed argon2id hash of a known password (hashing 10K
passwords would take minutes and measure nothing), ten orders each with one to three
items and a consistent total, and a preferences document per user. Rows follow the
schema of migrations 0002 and 0006 (seeded users are verified, so they may order);
``users.id`` and ``orders.id`` come from their identities.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

__all__ = ["SeedCounts", "seed", "user_email"]


def user_email(n: int) -> str:
    """The email of the ``n``-th seeded user (1-based)."""
    return f"user{n}@bench.example.com"


@dataclass(frozen=True, slots=True)
class SeedCounts:
    users: int
    orders: int
    order_items: int
    preferences: int


_USERS = """
    INSERT INTO users (email, display_name, password_hash, email_verified_at)
    SELECT 'user' || g || '@bench.example.com', 'Bench User ' || g, $1, now()
    FROM generate_series(1, $2) AS g
"""
# Spread creation times over the last year so "recent orders" is a real index walk.
_ORDERS = """
    INSERT INTO orders (user_id, total_cents, created_at)
    SELECT u.id, 0, now() - make_interval(secs => (u.id * 7919 + g * 104729) % 31536000)
    FROM users AS u, generate_series(1, $1) AS g
    ORDER BY 3
"""
_ITEMS = """
    INSERT INTO order_items (order_id, line_no, sku, quantity, unit_price_cents)
    SELECT o.id, line, 'SKU-' || ((o.id * 31 + line) % 500), 1 + (o.id + line) % 3,
           100 + (o.id * 17 + line * 13) % 9900
    FROM orders AS o, generate_series(1, 1 + o.id % 3) AS line
"""
_TOTALS = """
    UPDATE orders AS o SET total_cents = t.total
    FROM (SELECT order_id, sum(quantity * unit_price_cents) AS total
          FROM order_items GROUP BY order_id) AS t
    WHERE o.id = t.order_id
"""
_PREFERENCES = """
    INSERT INTO preferences (user_id, document)
    SELECT id, jsonb_build_object(
        'language', (ARRAY['en', 'fr', 'de', 'es'])[1 + id % 4],
        'timezone', (ARRAY['UTC', 'Europe/Paris', 'America/New_York'])[1 + id % 3],
        'theme', (ARRAY['system', 'light', 'dark'])[1 + id % 3],
        'marketing_emails', id % 2 = 0,
        'order_updates', true,
        'page_size', 20)
    FROM users
"""


async def seed(dsn: str, *, users: int, orders_per_user: int, password_hash: str) -> SeedCounts:
    """Insert ``users`` users and ``users * orders_per_user`` orders into an empty schema."""
    if users < 1 or orders_per_user < 0:
        raise ValueError("`users` must be positive and `orders_per_user` not negative")
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute(_USERS, password_hash, users)
            await conn.execute(_ORDERS, orders_per_user)
            await conn.execute(_ITEMS)
            await conn.execute(_TOTALS)
            await conn.execute(_PREFERENCES)
        # Fresh statistics, so the first measured queries get the plans production gets.
        await conn.execute("ANALYZE")
        counts = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM users) AS users, (SELECT count(*) FROM orders) AS orders,"
            " (SELECT count(*) FROM order_items) AS order_items,"
            " (SELECT count(*) FROM preferences) AS preferences"
        )
    finally:
        await conn.close()
    assert counts is not None
    return SeedCounts(**dict(counts))
