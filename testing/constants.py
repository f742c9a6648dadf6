"""Values the fixtures and the tests share: where the repository is, the emulator's credentials, the
`products` table most acceptance tests sync."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP_ID = "TESTAPP"
API_KEY = "test-admin-key-5f2a9c"  # grepped for in every captured output: it must never leak

PRODUCTS = """
CREATE TABLE products (
    id          serial PRIMARY KEY,
    name        text NOT NULL,
    price       numeric(12, 2),
    stock       integer DEFAULT 0,
    tags        text[],
    attrs       jsonb,
    released_on date,
    updated_at  timestamptz DEFAULT now()
)"""
