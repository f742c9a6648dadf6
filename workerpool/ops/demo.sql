-- `workerpool demo`: its sample catalog, in its own schema, and what the demo does to it (ops/demo.py).
--
-- Not part of workerpool's schema: the demo runs these, and nothing else does. The format is
-- sql/queries.sql's (named blocks, read by `db.queries.parse`); tests/integration/test_schema.py
-- prepares each statement against the catalog.

-- name: reset_schema
DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};

-- name: catalog
CREATE TABLE brands (id integer PRIMARY KEY, name text NOT NULL);
CREATE TABLE categories (id integer PRIMARY KEY, name text NOT NULL);
CREATE TABLE products (
    id          serial PRIMARY KEY,
    name        text NOT NULL,
    brand_id    integer NOT NULL REFERENCES brands,
    category_id integer NOT NULL REFERENCES categories,
    price       numeric(10, 2) NOT NULL,
    published   boolean NOT NULL DEFAULT true,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE VIEW products_search AS
SELECT p.id, p.name, b.name AS brand, c.name AS category, p.price, p.published, p.updated_at
  FROM products p JOIN brands b ON b.id = p.brand_id JOIN categories c ON c.id = p.category_id;;

-- name: server_version
SHOW server_version;

-- name: insert_brand
INSERT INTO brands VALUES (%s, %s);

-- name: insert_category
INSERT INTO categories VALUES (%s, %s);

-- name: insert_product
INSERT INTO products (name, brand_id, category_id, price, published) VALUES (%s, %s, %s, %s, %s);

-- name: count_products
SELECT count(*) FROM products;

-- name: queued
SELECT (SELECT count(*) FROM algolia_sync_queue), (SELECT coalesce(sum(keys), 0) FROM algolia_sync_inbox);

-- name: first_product
SELECT id, price FROM products ORDER BY id LIMIT 1;

-- name: reprice
UPDATE products SET price = 9.99, updated_at = now() WHERE id = %s;

-- name: last_product
SELECT max(id) FROM products;

-- name: delete_product
DELETE FROM products WHERE id = %s;

-- name: add_product
INSERT INTO products (name, brand_id, category_id, price) VALUES ('Demo lamp', 1, 3, 42.00) RETURNING id;

-- name: count_records
SELECT count(*) FROM products_search;
