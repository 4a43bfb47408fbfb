-- tenantcache: the database side. Installs schema "tenantcache": the trigger
-- function that turns committed changes of your tables into NOTIFY messages,
-- watch_table()/unwatch_table() to attach it, manual invalidate()/
-- invalidate_tenant()/flush(), and the invalidation log a reconnecting daemon
-- replays.
--
-- Plain SQL for PostgreSQL 12 and later; no extension, no superuser. Run it as
-- a role allowed to create a schema in the database (the owner of your tables
-- is typical). Idempotent: running it again changes nothing, and running a
-- newer install.sql over an older installation upgrades it in place.
--
--   psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -f sql/install.sql
--
-- Watching a table is reserved to the roles you allow (the installer is):
--
--   GRANT EXECUTE ON FUNCTION tenantcache.on_change() TO app_owner;
--
-- for each role owning tables to watch. The roles that only write to watched
-- tables need nothing. Upgrading from version 1 grants it to the owners of
-- the tables already watched, with a NOTICE naming each of them.
--
-- The daemon's database role reads this schema and records the namespaces it
-- serves; one statement, run by the installer, grants all of it (and says
-- what it granted):
--
--   SELECT tenantcache.grant_daemon('tenantcache');
--
-- It also needs SELECT on the tables its [[namespace]] queries read.
--
-- Message format (payload of NOTIFY on the configured channel, default
-- "tenantcache"); fields are separated by one space, the last field is the
-- rest of the payload taken verbatim (keys may contain spaces):
--
--   1 k <seq> <namespace> <key>   the entry for <key> in <namespace> changed
--   1 t <seq> <tenant id>         every entry of this tenant changed
--   1 f <seq>                     everything may have changed (flush)
--
-- "1" is the format version. <seq> is the invalidation log's sequence number,
-- or "-" when the log is off. The daemon also sends itself "1 h <token>" as a
-- liveness heartbeat on the same channel.

BEGIN;

CREATE SCHEMA IF NOT EXISTS tenantcache;
COMMENT ON SCHEMA tenantcache IS 'tenantcache: cache invalidation through NOTIFY (see tenantcache.version)';

CREATE TABLE IF NOT EXISTS tenantcache.version (
  version integer PRIMARY KEY,
  installed_at timestamptz NOT NULL DEFAULT now()
);

-- Version 1 objects. A later version adds its own block below this one (or,
-- when it needs the functions, below those), guarded the same way, so an
-- installation moves forward one step at a time.
DO $install$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM tenantcache.version WHERE version >= 1) THEN
    -- One row of settings, read by the triggers at every statement.
    CREATE TABLE tenantcache.settings (
      id boolean PRIMARY KEY DEFAULT true CHECK (id),
      channel text NOT NULL DEFAULT 'tenantcache'
        CHECK (channel ~ '^[a-z_][a-z0-9_]{0,62}$'),
      log_enabled boolean NOT NULL DEFAULT true,
      bulk_threshold integer NOT NULL DEFAULT 1000 CHECK (bulk_threshold >= 1)
    );
    INSERT INTO tenantcache.settings DEFAULT VALUES;
    COMMENT ON TABLE tenantcache.settings IS
      'channel: NOTIFY channel; log_enabled: also append every message to invalidation_log; '
      'bulk_threshold: a statement producing more messages sends one coarse message instead';

    -- Every message, in commit-independent order of creation. A daemon that
    -- lost its connection replays the rows committed since its last sync
    -- point (by transaction id and snapshot: sequence numbers are assigned
    -- before commit, so they do not arrive in commit order).
    CREATE TABLE tenantcache.invalidation_log (
      seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
      xid bigint NOT NULL DEFAULT txid_current(),
      created_at timestamptz NOT NULL DEFAULT now(),
      kind "char" NOT NULL CHECK (kind IN ('k', 't', 'f')),
      namespace text,
      key text
    );
    CREATE INDEX invalidation_log_xid ON tenantcache.invalidation_log (xid);
    CREATE INDEX invalidation_log_created_at ON tenantcache.invalidation_log (created_at);

    -- What prune_log removed, so a daemon can tell the log no longer reaches
    -- back to its sync point (it then flushes instead of replaying).
    CREATE TABLE tenantcache.log_horizon (
      id boolean PRIMARY KEY DEFAULT true CHECK (id),
      pruned_through_seq bigint NOT NULL DEFAULT 0,
      pruned_max_xid bigint NOT NULL DEFAULT 0,
      pruned_at timestamptz
    );
    INSERT INTO tenantcache.log_horizon DEFAULT VALUES;

    INSERT INTO tenantcache.version (version) VALUES (1);
  END IF;
END
$install$;

-- Version 3's table, created here because the functions and the view below
-- read it (the version row is added at the end, after version 2's step).
-- One row per daemon and database role: the namespaces the daemon serves,
-- written by daemon_seen() when its listener connects and every minute after,
-- so that watch_table() and watched_tables can name the keys no running daemon
-- serves. A row is keyed by the daemon's login role and an id the daemon
-- chooses (host name and cache path): a daemon can only ever write the rows
-- of its own role. Rows not seen for a day are deleted. Per-daemon state
-- that several daemons on one database must share (such as how far each has
-- replayed the log) belongs here, as columns keyed the same way.
DO $install$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM tenantcache.version WHERE version >= 3) THEN
    CREATE TABLE tenantcache.daemons (
      daemon_role name NOT NULL,
      daemon_id text NOT NULL,
      namespaces text[] NOT NULL,
      first_seen timestamptz NOT NULL DEFAULT now(),
      last_seen timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (daemon_role, daemon_id)
    );
    COMMENT ON TABLE tenantcache.daemons IS
      'the namespaces each running tenantcached serves (written by tenantcache.daemon_seen)';
  END IF;
END
$install$;

-- Version 4's columns (the version row is added at the end): each daemon's
-- log_retention, recorded by daemon_prune_log() when the daemon prunes, and
-- when it last did. See daemon_prune_log() for the rule they serve.
DO $install$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM tenantcache.version WHERE version >= 4) THEN
    ALTER TABLE tenantcache.daemons ADD COLUMN IF NOT EXISTS log_retention interval,
      ADD COLUMN IF NOT EXISTS retention_seen timestamptz;
  END IF;
END
$install$;

-- Functions are (re)defined on every run: CREATE OR REPLACE keeps their
-- identity, so triggers already attached keep working across upgrades.

-- Sends one message (and logs it). Internal: use invalidate(),
-- invalidate_tenant() or flush().
CREATE OR REPLACE FUNCTION tenantcache._emit(kind "char", namespace text, key text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  s tenantcache.settings;
  seq bigint;
BEGIN
  IF kind = 'k' THEN
    IF namespace IS NULL OR key IS NULL THEN
      RETURN;
    END IF;
    IF namespace !~ '^[a-z0-9_]{1,63}$' THEN
      RAISE EXCEPTION 'tenantcache: invalid namespace name %', quote_literal(namespace)
        USING HINT = 'namespace names are 1-63 characters of a-z, 0-9 and _';
    END IF;
    -- A key longer than any key kind allows can never be in the cache (the
    -- client refuses it before any lookup): there is nothing to invalidate.
    IF octet_length(key) > 263 THEN
      RETURN;
    END IF;
  ELSIF kind = 't' THEN
    IF key IS NULL THEN
      RETURN;
    END IF;
    -- NOTIFY payloads must stay under 8000 bytes: an absurdly long tenant id
    -- is covered by a flush instead.
    IF octet_length(key) > 7000 THEN
      kind := 'f';
      key := NULL;
    END IF;
    namespace := NULL;
  ELSIF kind = 'f' THEN
    namespace := NULL;
    key := NULL;
  ELSE
    RAISE EXCEPTION 'tenantcache: unknown message kind %', kind;
  END IF;

  SELECT * INTO s FROM tenantcache.settings;
  IF s.log_enabled THEN
    INSERT INTO tenantcache.invalidation_log (kind, namespace, key)
    VALUES (kind, namespace, key)
    RETURNING invalidation_log.seq INTO seq;
  END IF;
  PERFORM pg_notify(s.channel,
    '1 ' || kind::text || ' ' || coalesce(seq::text, '-') ||
    CASE kind WHEN 'k' THEN ' ' || namespace || ' ' || key
              WHEN 't' THEN ' ' || key
              ELSE '' END);
END
$$;
REVOKE ALL ON FUNCTION tenantcache._emit("char", text, text) FROM PUBLIC;

-- Manual invalidation, for changes the triggers do not see. They take effect
-- when the calling transaction commits, and not at all if it rolls back.
CREATE OR REPLACE FUNCTION tenantcache.invalidate(namespace text, key text)
RETURNS void
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT tenantcache._emit('k', namespace, key) $$;

CREATE OR REPLACE FUNCTION tenantcache.invalidate_tenant(tenant_id text)
RETURNS void
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT tenantcache._emit('t', NULL, tenant_id) $$;

CREATE OR REPLACE FUNCTION tenantcache.flush()
RETURNS void
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT tenantcache._emit('f', NULL, NULL) $$;

-- The trigger function. Statement level, with transition tables, so a bulk
-- statement is seen whole: it sends one message per distinct changed key (and
-- tenant id, for registry tables) or, above settings.bulk_threshold messages,
-- one message per tenant when that covers every change, else one flush.
-- Arguments (set by watch_table): tenant column ('' for none), the keys spec
-- (jsonb: namespace -> column), the watched columns ('' for all).
--
-- It runs with the installer's rights (it writes the log and reads the
-- settings, which the writing roles may not), so two rules keep those rights
-- out of other roles' reach:
--  - Only tables whose owner holds EXECUTE on this function are served: that
--    grant is what allows a role to watch tables (CREATE TRIGGER checks it
--    too, but only when the trigger is created; a trigger attached before the
--    grant was required, or whose owner lost it, must neither log nor notify).
--  - No code the table's owner could have written runs here: a column of a
--    type it created may carry its own casts (CREATE CAST ... AS json) and
--    operators, so rows are never passed to to_jsonb(), casts or comparisons.
--    Each needed column is read as text through its type's output function
--    (format('%s', v)), which only a superuser can define, and old and new
--    rows are compared as those texts.
CREATE OR REPLACE FUNCTION tenantcache.on_change()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  tenant_col text := nullif(TG_ARGV[0], '');
  keys jsonb := TG_ARGV[1]::jsonb;
  watched text[] := nullif(TG_ARGV[2], '')::text[];
  owner_allowed boolean;
  owner_name name;
  names text[];
  values_sql text;
  rows jsonb[];
  news boolean[];
  old_rows jsonb[];
  new_rows jsonb[];
BEGIN
  SELECT has_function_privilege(c.relowner, 'tenantcache.on_change()'::regprocedure, 'EXECUTE'),
         pg_get_userbyid(c.relowner)
    INTO owner_allowed, owner_name
    FROM pg_class c WHERE c.oid = TG_RELID;
  IF NOT owner_allowed THEN
    RAISE EXCEPTION 'tenantcache: table % is watched, but its owner % may not watch tables', TG_RELID::regclass,
      quote_ident(owner_name)
      USING HINT = format('Allow it (GRANT EXECUTE ON FUNCTION tenantcache.on_change() TO %I) or stop '
                          'watching the table (SELECT tenantcache.unwatch_table(%L)).', owner_name, TG_RELID::regclass);
  END IF;
  IF TG_OP = 'TRUNCATE' THEN
    PERFORM tenantcache._emit('f', NULL, NULL);
    RETURN NULL;
  END IF;
  -- The columns that matter (all of them when watched is NULL; the key and
  -- tenant columns always), each as text, or NULL when the value is NULL
  -- (num_nulls, because "v IS NULL" is also true of a composite value whose
  -- fields are all NULL).
  SELECT array_agg(a.attname::text ORDER BY a.attnum),
         string_agg(format('CASE WHEN num_nulls(t.%1$I) = 0 THEN format(''%%s'', t.%1$I) END', a.attname),
                    ', ' ORDER BY a.attnum)
    INTO names, values_sql
    FROM pg_attribute a
   WHERE a.attrelid = TG_RELID AND a.attnum > 0 AND NOT a.attisdropped
     AND (watched IS NULL OR a.attname = ANY (watched) OR a.attname = tenant_col
          OR a.attname IN (SELECT k.value FROM jsonb_each_text(keys) k));
  IF names IS NULL THEN
    RETURN NULL;
  END IF;
  -- The changed rows, each as jsonb of those texts: all rows for INSERT and
  -- DELETE; for UPDATE the old and new versions of the rows whose watched
  -- columns changed (a row updated to identical values drops out).
  values_sql := 'jsonb_object($1, ARRAY[' || values_sql || '])';
  IF TG_OP = 'INSERT' THEN
    EXECUTE format('SELECT array_agg(%s), array_agg(true) FROM tc_new t', values_sql)
      INTO rows, news USING names;
  ELSIF TG_OP = 'DELETE' THEN
    EXECUTE format('SELECT array_agg(%s), array_agg(false) FROM tc_old t', values_sql)
      INTO rows, news USING names;
  ELSE
    -- Only the projection is dynamic: the comparison is static SQL, whose
    -- plan PL/pgSQL keeps for the session (planning it at every statement
    -- cost several times more than the rest of the trigger).
    EXECUTE format('SELECT (SELECT array_agg(%1$s) FROM tc_old t), (SELECT array_agg(%1$s) FROM tc_new t)',
                   values_sql)
      INTO old_rows, new_rows USING names;
    WITH c AS ((SELECT j, false AS is_new FROM (SELECT unnest(old_rows) EXCEPT ALL SELECT unnest(new_rows)) a(j))
               UNION ALL
               (SELECT j, true FROM (SELECT unnest(new_rows) EXCEPT ALL SELECT unnest(old_rows)) b(j)))
    SELECT array_agg(c.j), array_agg(c.is_new) INTO rows, news FROM c;
  END IF;
  IF rows IS NOT NULL THEN
    PERFORM tenantcache._send_changes(rows, news, TG_OP, tenant_col, keys);
  END IF;
  RETURN NULL;
END
$$;
-- Watching tables is for the roles the installer allows (see Privileges).
REVOKE ALL ON FUNCTION tenantcache.on_change() FROM PUBLIC;

-- Sends the messages for one statement's changed rows (see on_change): one
-- per distinct key and tenant id, or above settings.bulk_threshold one per
-- tenant when that covers every change, else one flush.
CREATE OR REPLACE FUNCTION tenantcache._send_changes(
  rows jsonb[], news boolean[], op text, tenant_col text, keys jsonb)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  threshold integer;
  kinds "char"[];
  namespaces text[];
  msg_keys text[];
  tenants text[];
  has_new_keys boolean;
  ns text;
  col text;
  v1 text;
  v2 text;
BEGIN
  SELECT bulk_threshold INTO threshold FROM tenantcache.settings;
  -- Fast path: one row inserted or deleted, or one row's old and new version
  -- (the common single-row write).
  IF cardinality(rows) <= 2 AND 2 * ((SELECT count(*) FROM jsonb_object_keys(keys)) + 1) <= threshold THEN
    FOR ns, col IN SELECT k.key, k.value FROM jsonb_each_text(keys) AS k LOOP
      v1 := rows[1] ->> col;
      v2 := rows[2] ->> col;
      PERFORM tenantcache._emit('k', ns, v1);
      IF v2 IS DISTINCT FROM v1 THEN
        PERFORM tenantcache._emit('k', ns, v2);
      END IF;
    END LOOP;
    IF tenant_col IS NOT NULL THEN
      v1 := rows[1] ->> tenant_col;
      v2 := rows[2] ->> tenant_col;
      PERFORM tenantcache._emit('t', NULL, v1);
      IF v2 IS DISTINCT FROM v1 THEN
        PERFORM tenantcache._emit('t', NULL, v2);
      END IF;
    END IF;
    RETURN;
  END IF;
  -- The distinct messages (at most threshold + 1 are collected), and for the
  -- coarse path the tenants and whether any key value is new (a new key may
  -- have a negative entry, which no tenant message reaches).
  WITH c AS (SELECT r.j, r.is_new FROM unnest(rows, news) AS r(j, is_new)),
  m AS (
    SELECT DISTINCT 'k'::"char" AS kind, k.namespace, c.j ->> k.col AS key, c.is_new
      FROM c, jsonb_each_text(keys) AS k(namespace, col)
     WHERE c.j ->> k.col IS NOT NULL
    UNION
    SELECT DISTINCT 't'::"char", NULL, c.j ->> tenant_col, false
      FROM c
     WHERE tenant_col IS NOT NULL AND c.j ->> tenant_col IS NOT NULL),
  d AS (SELECT DISTINCT m.kind, m.namespace, m.key FROM m ORDER BY 1, 2, 3 LIMIT threshold + 1)
  SELECT (SELECT array_agg(d.kind ORDER BY d.kind, d.namespace, d.key) FROM d),
         (SELECT array_agg(d.namespace ORDER BY d.kind, d.namespace, d.key) FROM d),
         (SELECT array_agg(d.key ORDER BY d.kind, d.namespace, d.key) FROM d),
         (SELECT array_agg(t.key ORDER BY t.key)
            FROM (SELECT DISTINCT m.key FROM m WHERE m.kind = 't' LIMIT threshold + 1) t),
         EXISTS (SELECT m.namespace, m.key FROM m WHERE m.kind = 'k' AND m.is_new
                 EXCEPT SELECT m.namespace, m.key FROM m WHERE m.kind = 'k' AND NOT m.is_new)
    INTO kinds, namespaces, msg_keys, tenants, has_new_keys;

  IF coalesce(cardinality(kinds), 0) <= threshold THEN
    FOR i IN 1 .. coalesce(cardinality(kinds), 0) LOOP
      PERFORM tenantcache._emit(kinds[i], namespaces[i], msg_keys[i]);
    END LOOP;
  ELSIF op <> 'INSERT' AND NOT has_new_keys AND cardinality(tenants) BETWEEN 1 AND threshold THEN
    -- Every changed entry belongs to one of these tenants and no key value is
    -- new: the tenant messages cover every change.
    FOR i IN 1 .. cardinality(tenants) LOOP
      PERFORM tenantcache._emit('t', NULL, tenants[i]);
    END LOOP;
  ELSE
    PERFORM tenantcache._emit('f', NULL, NULL);
  END IF;
END
$$;
REVOKE ALL ON FUNCTION tenantcache._send_changes(jsonb[], boolean[], text, text, jsonb) FROM PUBLIC;

-- Attaches the triggers to one of your tables (you must own it). keys maps
-- each namespace whose key is a column of this table to that column:
--   SELECT tenantcache.watch_table('user_accounts', NULL, '{"user": "id"}');
--   SELECT tenantcache.watch_table('fleet_registry', 'id',
--     '{"tenant": "id", "tenant_by_slug": "slug", "tenant_by_host": "host"}');
-- tenant_column names the column holding the tenant id when this is a tenant
-- registry table: any change to a row then invalidates every cached entry of
-- that tenant, in every namespace. columns limits which columns count as a
-- change (default: all; the key and tenant columns are always included).
-- Watching a table again replaces the previous spec. The table's owner (and
-- you, if you act as a member of that role) must be allowed to watch tables:
--   GRANT EXECUTE ON FUNCTION tenantcache.on_change() TO app_owner;
CREATE OR REPLACE FUNCTION tenantcache.watch_table(
  tbl regclass, tenant_column text, keys jsonb, columns text[] DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  col text;
  ns text;
  watched text[];
  args text;
  owner_id oid;
  who text;
  served text[];
  unserved text[];
BEGIN
  -- Ownership and the grant are checked here, before anything changes, so
  -- that a refusal names what is missing (CREATE TRIGGER would only say
  -- "permission denied for function on_change"); on_change checks the
  -- owner's grant again at every statement.
  SELECT c.relowner INTO owner_id FROM pg_class c WHERE c.oid = tbl;
  IF NOT pg_has_role(current_user, owner_id, 'USAGE') THEN
    RAISE EXCEPTION 'tenantcache.watch_table: must be owner of table % to watch it', tbl
      USING HINT = format('Run it as %I, the owner.', pg_get_userbyid(owner_id));
  END IF;
  -- The owner needs the grant for the triggers to run, and the caller (the
  -- owner or a member of it) for CREATE TRIGGER.
  FOR who IN SELECT DISTINCT r FROM unnest(ARRAY[pg_get_userbyid(owner_id), current_user::text]) r LOOP
    IF NOT has_function_privilege(who, 'tenantcache.on_change()', 'EXECUTE') THEN
      RAISE EXCEPTION 'tenantcache.watch_table: role % may not watch tables (it has no EXECUTE on tenantcache.on_change())',
        quote_ident(who)
        USING HINT = format('The installer allows it: GRANT EXECUTE ON FUNCTION tenantcache.on_change() TO %I;', who);
    END IF;
  END LOOP;
  IF keys IS NULL OR jsonb_typeof(keys) <> 'object' THEN
    RAISE EXCEPTION 'tenantcache.watch_table: keys must be a JSON object of namespace -> column'
      USING HINT = 'for example ''{"user": "id"}''';
  END IF;
  IF keys = '{}'::jsonb AND tenant_column IS NULL THEN
    RAISE EXCEPTION 'tenantcache.watch_table: give at least one key or a tenant_column';
  END IF;
  FOR ns, col IN SELECT key, value FROM jsonb_each_text(keys) LOOP
    IF jsonb_typeof(keys -> ns) <> 'string' THEN
      RAISE EXCEPTION 'tenantcache.watch_table: the column of namespace % must be a string', ns;
    END IF;
    IF ns !~ '^[a-z0-9_]{1,63}$' THEN
      RAISE EXCEPTION 'tenantcache.watch_table: invalid namespace name %', quote_literal(ns);
    END IF;
    PERFORM tenantcache._check_column(tbl, col);
  END LOOP;
  IF tenant_column IS NOT NULL THEN
    PERFORM tenantcache._check_column(tbl, tenant_column);
  END IF;
  IF columns IS NOT NULL THEN
    FOREACH col IN ARRAY columns LOOP
      PERFORM tenantcache._check_column(tbl, col);
    END LOOP;
    SELECT array_agg(DISTINCT c ORDER BY c) INTO watched
      FROM unnest(columns || ARRAY(SELECT value FROM jsonb_each_text(keys))
                  || CASE WHEN tenant_column IS NULL THEN ARRAY[]::text[] ELSE ARRAY[tenant_column] END) c;
  END IF;

  PERFORM tenantcache.unwatch_table(tbl);
  served := tenantcache.served_namespaces();
  args := format('%L, %L, %L', coalesce(tenant_column, ''), keys::text, coalesce(watched::text, ''));
  EXECUTE format('CREATE TRIGGER tenantcache_ins AFTER INSERT ON %s REFERENCING NEW TABLE AS tc_new
                  FOR EACH STATEMENT EXECUTE FUNCTION tenantcache.on_change(%s)', tbl, args);
  EXECUTE format('CREATE TRIGGER tenantcache_upd AFTER UPDATE ON %s REFERENCING OLD TABLE AS tc_old NEW TABLE AS tc_new
                  FOR EACH STATEMENT EXECUTE FUNCTION tenantcache.on_change(%s)', tbl, args);
  EXECUTE format('CREATE TRIGGER tenantcache_del AFTER DELETE ON %s REFERENCING OLD TABLE AS tc_old
                  FOR EACH STATEMENT EXECUTE FUNCTION tenantcache.on_change(%s)', tbl, args);
  EXECUTE format('CREATE TRIGGER tenantcache_trunc AFTER TRUNCATE ON %s
                  FOR EACH STATEMENT EXECUTE FUNCTION tenantcache.on_change(%s)', tbl, args);
  -- A namespace name no daemon serves (a typo, or a daemon not yet told about
  -- it) is legal, but its messages would be ignored: say so now rather than
  -- when a stale entry is noticed. Unknown while no daemon reports.
  IF served IS NOT NULL THEN
    SELECT array_agg(k ORDER BY k) INTO unserved FROM jsonb_object_keys(keys) k WHERE k <> ALL (served);
    IF unserved IS NOT NULL THEN
      RAISE WARNING 'tenantcache: watch_table: no tenantcached seen in the last 5 minutes serves namespace(s) % '
                    'of table %: the daemons ignore their invalidations', array_to_string(unserved, ', '), tbl
        USING HINT = format('The running daemons serve: %s. Use a [[namespace]] name of tenantcached.toml in keys, '
                            'or add the namespace to the daemons'' configuration; '
                            'SELECT * FROM tenantcache.watched_tables shows the keys no daemon serves.',
                            coalesce(nullif(array_to_string(served, ', '), ''), 'none'));
    END IF;
  END IF;
END
$$;

CREATE OR REPLACE FUNCTION tenantcache._check_column(tbl regclass, col text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF col IS NULL OR NOT EXISTS (
      SELECT 1 FROM pg_attribute
       WHERE attrelid = tbl AND attname = col AND attnum > 0 AND NOT attisdropped) THEN
    RAISE EXCEPTION 'tenantcache.watch_table: table % has no column %', tbl, quote_ident(coalesce(col, '(null)'));
  END IF;
END
$$;

-- Removes the triggers watch_table attached. Returns whether there were any.
CREATE OR REPLACE FUNCTION tenantcache.unwatch_table(tbl regclass)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  t name;
  found_any boolean := false;
BEGIN
  FOR t IN SELECT tgname FROM pg_trigger
            WHERE tgrelid = tbl AND tgfoid = 'tenantcache.on_change()'::regprocedure LOOP
    EXECUTE format('DROP TRIGGER %I ON %s', t, tbl);
    found_any := true;
  END LOOP;
  RETURN found_any;
END
$$;

-- The namespaces served by the daemons seen in the last 5 minutes (each
-- records them every minute), sorted; NULL when no daemon reported in that
-- time, so that "nothing is served" is never claimed from no evidence.
-- Executable by PUBLIC: it reveals namespace names only, which every role can
-- already read in the triggers' arguments (pg_trigger).
CREATE OR REPLACE FUNCTION tenantcache.served_namespaces()
RETURNS text[]
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT CASE WHEN count(*) > 0
              THEN coalesce(array_agg(DISTINCT n.ns ORDER BY n.ns) FILTER (WHERE n.ns IS NOT NULL), '{}') END
    FROM tenantcache.daemons d LEFT JOIN LATERAL unnest(d.namespaces) AS n(ns) ON true
   WHERE d.last_seen > now() - interval '5 minutes'
$$;

-- Called by the daemon when its listener connects, on reload and every
-- minute: records the namespaces it serves (see tenantcache.daemons). Only
-- for the daemon roles allowed by grant_daemon(). `daemon` is the daemon's
-- id (printable ASCII, at most 255 bytes); `served`, its namespace names.
CREATE OR REPLACE FUNCTION tenantcache.daemon_seen(daemon text, served text[])
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF daemon IS NULL OR daemon !~ '^[ -~]{1,255}$' THEN
    RAISE EXCEPTION 'tenantcache.daemon_seen: the daemon id must be 1-255 printable ASCII characters';
  END IF;
  IF served IS NULL OR cardinality(served) > 1024 OR array_position(served, NULL) IS NOT NULL
     OR EXISTS (SELECT 1 FROM unnest(served) n WHERE n !~ '^[a-z0-9_]{1,63}$') THEN
    RAISE EXCEPTION 'tenantcache.daemon_seen: namespaces must be at most 1024 names of 1-63 characters of a-z, 0-9 and _';
  END IF;
  DELETE FROM tenantcache.daemons d WHERE d.last_seen < now() - interval '1 day';
  -- session_user, not current_user (the definer here): the login role the
  -- daemon connected as.
  INSERT INTO tenantcache.daemons AS d (daemon_role, daemon_id, namespaces)
  VALUES (session_user, daemon, ARRAY(SELECT DISTINCT n FROM unnest(served) n ORDER BY n))
  ON CONFLICT (daemon_role, daemon_id)
  DO UPDATE SET namespaces = EXCLUDED.namespaces, last_seen = now();
END
$$;
REVOKE ALL ON FUNCTION tenantcache.daemon_seen(text, text[]) FROM PUBLIC;

-- Log retention: the daemons prune the invalidation log themselves, by one
-- rule that is safe however many daemons share the database.
--
-- A daemon needs log rows only to replay what it missed while disconnected,
-- and one that cannot replay flushes its cache instead (safe, only colder:
-- log_horizon tells it). A daemon configured with log_retention R promises
-- to replay a disconnect shorter than R (less the age of its sync point, a
-- few heartbeats). So, at each call, the calling daemon records R and the
-- time in its own row of tenantcache.daemons, and a log row is deleted only
-- when it is older than the LONGEST retention among the daemons that
-- recorded theirs within twice that retention:
--  - a daemon with a short retention never deletes what one with a longer
--    retention still needs (the longest one decides for all);
--  - a daemon that stopped (or was decommissioned) keeps its claim for twice
--    its retention, time enough to come back and replay, then stops holding
--    the log; its row goes after a day (daemon_seen), so a retention is at
--    most a day;
--  - a daemon with log_retention = 0 never calls this and claims nothing
--    (prune by cron with prune_log() then, with a keep of your choosing).
-- Several daemons pruning at once do not fight: one DELETE at a time (an
-- advisory lock; the others skip their turn), at most 10000 rows per call
-- (a backlog is worked off over several calls, never in one long lock or
-- one huge transaction).
--
-- Who may call it: the daemon roles of grant_daemon(), keyed by
-- session_user (the login role) and `daemon` (its id, as for daemon_seen),
-- after daemon_seen() recorded that daemon. Any other role is refused, so it
-- can neither prune the log nor plant a retention. A daemon role can set only
-- its own rows' retention, at most a day: the worst it can do to the other
-- daemons is to hold the log for a day (it can never shorten what they
-- keep), and a daemon role is trusted with the data it caches anyway.
-- Returns the number of rows deleted.
CREATE OR REPLACE FUNCTION tenantcache.daemon_prune_log(daemon text, retention interval)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  keep interval;
  deleted bigint;
  max_seq bigint;
  max_xid bigint;
BEGIN
  IF retention IS NULL OR retention <= interval '0' OR retention > interval '1 day' THEN
    RAISE EXCEPTION 'tenantcache.daemon_prune_log: the retention must be more than 0 and at most 1 day, not %',
      coalesce(retention::text, 'NULL');
  END IF;
  UPDATE tenantcache.daemons d SET log_retention = retention, retention_seen = now()
   WHERE d.daemon_role = session_user AND d.daemon_id = daemon;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'tenantcache.daemon_prune_log: no daemon % of role % is recorded',
      quote_literal(coalesce(daemon, 'NULL')), quote_ident(session_user)
      USING HINT = 'The daemon records itself with tenantcache.daemon_seen() first.';
  END IF;
  -- One pruner at a time (the same lock as prune_log); the others skip.
  IF NOT pg_try_advisory_xact_lock('tenantcache.invalidation_log'::regclass::oid::bigint) THEN
    RETURN 0;
  END IF;
  SELECT max(d.log_retention) INTO keep FROM tenantcache.daemons d
   WHERE d.log_retention IS NOT NULL AND d.retention_seen > now() - 2 * d.log_retention;
  WITH victims AS (
    SELECT l.seq FROM tenantcache.invalidation_log l
     WHERE l.created_at < now() - keep ORDER BY l.created_at LIMIT 10000
  ), d AS (
    DELETE FROM tenantcache.invalidation_log l USING victims v WHERE l.seq = v.seq RETURNING l.seq, l.xid
  )
  SELECT count(*), max(d.seq), max(d.xid) INTO deleted, max_seq, max_xid FROM d;
  IF deleted > 0 THEN
    UPDATE tenantcache.log_horizon
       SET pruned_through_seq = greatest(pruned_through_seq, max_seq),
           pruned_max_xid = greatest(pruned_max_xid, max_xid),
           pruned_at = now();
  END IF;
  RETURN deleted;
END
$$;
REVOKE ALL ON FUNCTION tenantcache.daemon_prune_log(text, interval) FROM PUBLIC;

-- The tables being watched and their specs (what the daemon checks after
-- each connect): the tenant column, the triggers, the keys (namespace ->
-- column) and, of those namespaces, the ones no daemon seen in the last 5
-- minutes serves (NULL when no daemon reported: unknown).
CREATE OR REPLACE VIEW tenantcache.watched_tables AS
SELECT w.table_name, w.tenant_column, w.triggers, w.keys,
       CASE WHEN s.served IS NOT NULL
            THEN ARRAY(SELECT k FROM jsonb_object_keys(w.keys) k WHERE k <> ALL (s.served) ORDER BY k) END
         AS unserved_keys
  FROM (SELECT t.tgrelid::regclass AS table_name,
               nullif(convert_from(split_part(encode(t.tgargs, 'escape'), '\000', 1)::bytea, 'UTF8'), '')
                 AS tenant_column,
               count(*) AS triggers,
               convert_from(split_part(encode(t.tgargs, 'escape'), '\000', 2)::bytea, 'UTF8')::jsonb AS keys
          FROM pg_trigger t
         WHERE t.tgfoid = 'tenantcache.on_change()'::regprocedure
         GROUP BY 1, 2, 4) w
 CROSS JOIN (SELECT tenantcache.served_namespaces() AS served) s;

-- What a daemon's database role lacks of what the daemon does in this
-- schema (read the version, the settings, the watched tables and the
-- invalidation log, which it replays after a reconnect; record its
-- namespaces; prune the log), as the privileges to GRANT ("SELECT ON tenantcache.version",
-- ...), in that order; empty when nothing is missing. The daemon asks it
-- about itself when it is refused, to name what is missing; grant_daemon()
-- grants exactly these. Invoker's rights: any role may ask.
CREATE OR REPLACE FUNCTION tenantcache.daemon_missing_grants(daemon_role regrole DEFAULT current_user::text::regrole)
RETURNS text[]
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT coalesce(array_agg(g.privilege ORDER BY g.n), '{}')
    FROM (VALUES
      (1, 'SELECT ON tenantcache.version', has_table_privilege(daemon_role, 'tenantcache.version', 'SELECT')),
      (2, 'SELECT ON tenantcache.settings', has_table_privilege(daemon_role, 'tenantcache.settings', 'SELECT')),
      (3, 'SELECT ON tenantcache.watched_tables',
       has_table_privilege(daemon_role, 'tenantcache.watched_tables', 'SELECT')),
      (4, 'SELECT ON tenantcache.invalidation_log',
       has_table_privilege(daemon_role, 'tenantcache.invalidation_log', 'SELECT')),
      (5, 'SELECT ON tenantcache.log_horizon', has_table_privilege(daemon_role, 'tenantcache.log_horizon', 'SELECT')),
      (6, 'EXECUTE ON FUNCTION tenantcache.daemon_seen(text, text[])',
       has_function_privilege(daemon_role, 'tenantcache.daemon_seen(text, text[])', 'EXECUTE')),
      (7, 'EXECUTE ON FUNCTION tenantcache.daemon_prune_log(text, interval)',
       has_function_privilege(daemon_role, 'tenantcache.daemon_prune_log(text, interval)', 'EXECUTE'))
    ) AS g(n, privilege, held)
   WHERE NOT g.held
$$;

-- Allows a daemon's database role everything the daemon does in this schema
-- (daemon_missing_grants). Run by the installer (it grants on the
-- installer's objects), as often as wanted: a NOTICE says what was granted,
-- or that nothing was missing. The role also needs SELECT on the tables (and
-- USAGE on the schemas) its [[namespace]] queries read.
--   SELECT tenantcache.grant_daemon('tenantcache');
CREATE OR REPLACE FUNCTION tenantcache.grant_daemon(daemon_role regrole)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  missing text[];
  privilege text;
BEGIN
  IF daemon_role IS NULL THEN
    RAISE EXCEPTION 'tenantcache.grant_daemon: give the daemon''s database role';
  END IF;
  missing := tenantcache.daemon_missing_grants(daemon_role);
  FOREACH privilege IN ARRAY missing LOOP
    EXECUTE format('GRANT %s TO %s', privilege, daemon_role);
  END LOOP;
  IF cardinality(missing) = 0 THEN
    RAISE NOTICE 'tenantcache: role % already has every grant the daemon needs in schema tenantcache', daemon_role;
  ELSE
    RAISE NOTICE 'tenantcache: granted to role %: %', daemon_role, array_to_string(missing, ', ')
      USING HINT = 'The daemon also needs SELECT on the tables its [[namespace]] queries read.';
  END IF;
END
$$;
REVOKE ALL ON FUNCTION tenantcache.grant_daemon(regrole) FROM PUBLIC;

-- Deletes log rows older than `keep` and records how far the log was cut.
-- Returns the number of rows deleted. For those who prune by cron: the
-- daemons prune by themselves (log_retention, see daemon_prune_log()), and
-- this ignores what they still need, so give a keep longer than the longest
-- log_retention of the daemons on this database.
CREATE OR REPLACE FUNCTION tenantcache.prune_log(keep interval)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  deleted bigint;
  max_seq bigint;
  max_xid bigint;
BEGIN
  IF keep IS NULL OR keep < interval '0' THEN
    RAISE EXCEPTION 'tenantcache.prune_log: keep must be a non-negative interval';
  END IF;
  -- The daemons' pruning waits for this one (daemon_prune_log).
  PERFORM pg_advisory_xact_lock('tenantcache.invalidation_log'::regclass::oid::bigint);
  WITH d AS (
    DELETE FROM tenantcache.invalidation_log WHERE created_at < now() - keep RETURNING seq, xid
  )
  SELECT count(*), max(seq), max(xid) INTO deleted, max_seq, max_xid FROM d;
  IF deleted > 0 THEN
    UPDATE tenantcache.log_horizon
       SET pruned_through_seq = greatest(pruned_through_seq, max_seq),
           pruned_max_xid = greatest(pruned_max_xid, max_xid),
           pruned_at = now();
  END IF;
  RETURN deleted;
END
$$;

-- Privileges. Any role may see the schema (so table owners can call
-- watch_table, which itself requires owning the table). Every function that
-- runs with the installer's rights is for the roles you grant it to, never
-- PUBLIC, but served_namespaces() (it reveals only what pg_trigger shows to
-- all). The daemon's role: SELECT tenantcache.grant_daemon('role'). The roles allowed to watch their tables (they can then send
-- invalidation messages for any key of those tables):
--   GRANT EXECUTE ON FUNCTION tenantcache.on_change() TO app_owner;
-- The roles writing to watched tables need no grant. The manual invalidation
-- functions and prune_log:
--   GRANT EXECUTE ON FUNCTION tenantcache.invalidate(text, text),
--     tenantcache.invalidate_tenant(text), tenantcache.flush() TO app;
GRANT USAGE ON SCHEMA tenantcache TO PUBLIC;
REVOKE ALL ON FUNCTION tenantcache.invalidate(text, text), tenantcache.invalidate_tenant(text),
  tenantcache.flush(), tenantcache.prune_log(interval) FROM PUBLIC;

-- Version 2: watching tables takes a grant (version 1 let any role attach
-- on_change to a table of its own, and so run code of its choosing with the
-- installer's rights). After the functions and privileges above, which it
-- builds on. The owners of the permanent tables already watched get the
-- grant, so that their triggers keep working; the installer is told who. A
-- trigger on a temporary table (which only a session of its own could have
-- attached) gets none: it now fails instead of running as the installer.
DO $install$
DECLARE
  r record;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM tenantcache.version WHERE version >= 2) THEN
    FOR r IN SELECT pg_get_userbyid(c.relowner) AS owner_name, c.relpersistence = 't' AS temporary,
                    string_agg(DISTINCT c.oid::regclass::text, ', ') AS tables
               FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
              WHERE t.tgfoid = 'tenantcache.on_change()'::regprocedure
                AND NOT has_function_privilege(c.relowner, t.tgfoid, 'EXECUTE')
              GROUP BY 1, 2 ORDER BY 1, 2 LOOP
      IF r.temporary THEN
        RAISE WARNING 'tenantcache: role % watches temporary table(s) % without being allowed to: '
                      'those triggers now fail', quote_ident(r.owner_name), r.tables;
      ELSE
        EXECUTE format('GRANT EXECUTE ON FUNCTION tenantcache.on_change() TO %I', r.owner_name);
        RAISE NOTICE 'tenantcache: granted EXECUTE on tenantcache.on_change() to role %, the owner of watched table(s) %',
          quote_ident(r.owner_name), r.tables;
      END IF;
    END LOOP;
    -- Version 1's helper for on_change, which no longer converts whole rows.
    IF to_regprocedure('tenantcache._watched(jsonb, text[])') IS NOT NULL THEN
      DROP FUNCTION tenantcache._watched(jsonb, text[]);
    END IF;
    INSERT INTO tenantcache.version (version) VALUES (2);
  END IF;
END
$install$;

-- Version 3: tenantcache.daemons (created above), daemon_seen(),
-- served_namespaces(), daemon_missing_grants(), grant_daemon(), and the keys
-- in watched_tables. The
-- daemon still accepts versions 1 and 2; it records its namespaces from 3 on.
DO $install$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM tenantcache.version WHERE version >= 3) THEN
    INSERT INTO tenantcache.version (version) VALUES (3);
  END IF;
END
$install$;

-- Version 4: daemons prune the log themselves (daemon_prune_log(), the
-- log_retention columns of tenantcache.daemons). The roles that could record
-- a daemon (EXECUTE on daemon_seen) are the daemon roles: they get the new
-- grant, so that their daemons prune after the upgrade; the installer is
-- told who. The daemon still accepts versions 1 to 3 (and then says that
-- pruning by itself needs this upgrade).
DO $install$
DECLARE
  r record;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM tenantcache.version WHERE version >= 4) THEN
    FOR r IN SELECT DISTINCT a.grantee::regrole AS grantee
               FROM pg_proc p, aclexplode(p.proacl) a
              WHERE p.oid = 'tenantcache.daemon_seen(text, text[])'::regprocedure
                AND a.privilege_type = 'EXECUTE' AND a.grantee <> 0 AND a.grantee <> p.proowner
              ORDER BY 1 LOOP
      EXECUTE format('GRANT EXECUTE ON FUNCTION tenantcache.daemon_prune_log(text, interval) TO %s', r.grantee);
      RAISE NOTICE 'tenantcache: granted EXECUTE on tenantcache.daemon_prune_log(text, interval) to daemon role %',
        r.grantee;
    END LOOP;
    INSERT INTO tenantcache.version (version) VALUES (4);
  END IF;
END
$install$;

-- The installed version, for the daemon's schema check.
CREATE OR REPLACE FUNCTION tenantcache.schema_version()
RETURNS integer
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT max(version) FROM tenantcache.version $$;

COMMIT;
