-- An example schema shaped like a real fleet-management API: user accounts
-- belong to a tenant (a yacht) with a role; the fleet registry maps tenant
-- uuid, code, slug and Host to the tenant's record. Requires sql/install.sql.
--
--   psql -v ON_ERROR_STOP=1 -f sql/install.sql -f sql/examples/fleet.sql \
--        -c "SELECT fleet.generate(100000, 1000)"
--
-- The daemon's namespaces for this schema (see the README) are:
--   user            uuid  SELECT r.id::text AS tenant_id, r.yacht_code AS tenant_code,
--                                r.tenant_url, u.role
--                           FROM fleet.user_accounts u JOIN fleet.fleet_registry r ON r.id = u.yacht_id
--                          WHERE u.id = $1::uuid AND u.active
--   tenant          uuid  SELECT id::text AS tenant_id, yacht_code, slug, host, tenant_url
--                           FROM fleet.fleet_registry WHERE id = $1::uuid
--   tenant_by_slug  slug  ... WHERE slug = $1
--   tenant_by_host  host  ... WHERE lower(host) = $1
--
-- Host keys reach the query normalised: lower-cased, without a trailing dot
-- or a :port suffix. Hosts are stored as entered (any case), so the query
-- compares lower(host), and a unique index on that expression both serves it
-- and keeps two spellings of one host from naming two tenants.

BEGIN;

CREATE SCHEMA IF NOT EXISTS fleet;

CREATE TABLE IF NOT EXISTS fleet.roles (
  name text PRIMARY KEY,
  description text NOT NULL DEFAULT ''
);
INSERT INTO fleet.roles (name, description) VALUES
  ('owner', 'owns the yacht'), ('captain', 'runs the yacht'), ('crew', 'works aboard'),
  ('guest', 'read-only access')
ON CONFLICT (name) DO NOTHING;

CREATE TABLE IF NOT EXISTS fleet.fleet_registry (
  id uuid PRIMARY KEY,
  yacht_code text NOT NULL UNIQUE,
  slug text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9-]{1,63}$'),
  host text NOT NULL,
  tenant_url text NOT NULL,
  plan text NOT NULL DEFAULT 'standard',
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS fleet_registry_host_lower ON fleet.fleet_registry (lower(host));

CREATE TABLE IF NOT EXISTS fleet.user_accounts (
  id uuid PRIMARY KEY,
  yacht_id uuid NOT NULL REFERENCES fleet.fleet_registry (id),
  email text NOT NULL,
  role text NOT NULL REFERENCES fleet.roles (name),
  active boolean NOT NULL DEFAULT true,
  last_login_at timestamptz
);
CREATE INDEX IF NOT EXISTS user_accounts_yacht ON fleet.user_accounts (yacht_id);

-- A user's cached entry depends on its tenant, role and active flag; logins
-- (last_login_at) are frequent and change nothing cached, so they are not
-- watched and send nothing.
SELECT tenantcache.watch_table('fleet.user_accounts', NULL, '{"user": "id"}',
                               ARRAY['yacht_id', 'role', 'active']);
-- A registry row is a tenant: any change to it reaches every cached entry of
-- that tenant, in every namespace.
SELECT tenantcache.watch_table('fleet.fleet_registry', 'id',
  '{"tenant": "id", "tenant_by_slug": "slug", "tenant_by_host": "host"}');

-- Deterministic ids: tenant n and user n always get the same uuid.
CREATE OR REPLACE FUNCTION fleet.tenant_id(n integer) RETURNS uuid
LANGUAGE sql IMMUTABLE AS $$ SELECT ('00000000-0000-4000-8000-' || lpad(to_hex(n), 12, '0'))::uuid $$;

CREATE OR REPLACE FUNCTION fleet.user_id(n integer) RETURNS uuid
LANGUAGE sql IMMUTABLE AS $$ SELECT ('00000000-0001-4000-8000-' || lpad(to_hex(n), 12, '0'))::uuid $$;

-- Fills the tables with `users` users spread over `tenants` tenants
CREATE OR REPLACE FUNCTION fleet.generate(users integer DEFAULT 100000, tenants integer DEFAULT 1000)
RETURNS void
LANGUAGE sql
AS $$
  INSERT INTO fleet.fleet_registry (id, yacht_code, slug, host, tenant_url)
  SELECT fleet.tenant_id(t), 'Y' || lpad(t::text, 5, '0'), 'yacht-' || t, 'yacht-' || t || '.fleet.example.com',
         'https://yacht-' || t || '.fleet.example.com'
    FROM generate_series(1, tenants) t;
  INSERT INTO fleet.user_accounts (id, yacht_id, email, role)
  SELECT fleet.user_id(u), fleet.tenant_id(1 + (u - 1) % tenants), 'user' || u || '@fleet.example.com',
         (ARRAY['owner', 'captain', 'crew', 'crew', 'guest'])[1 + u % 5]
    FROM generate_series(1, users) u;
$$;

COMMIT;
