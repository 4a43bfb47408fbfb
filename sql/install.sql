-- tenantcache: the database side. Installs schema "tenantcache": the trigger
-- function that turns committed changes of your tables into NOTIFY messages,
-- watch_table()/unwatch_table() to attach it, manual invalidate()/
-- invalidate_tenant()/flush(), and the invalidation log a reconnecting daemon
-- replays.
--
-- Plain SQL for PostgreSQL 13 and later; no extension, no superuser. Run it as
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
-- or "-" when the log is off. The daemons also send heartbeats on the same
-- channel: "1 h <token>", a daemon's own, or (from version 6 on)
-- "1 h 2 <snapshot> <signature>", shared by every daemon on the database and
-- signed with the key in tenantcache.heartbeat_key.

BEGIN;

-- Everything below names its objects with their schema or finds them in
-- pg_catalog. A function or operator another role put in a schema of the
-- installer's search_path (public, where every role could create objects
-- before PostgreSQL 15) that matches some arguments better than
-- pg_catalog's must be neither called with the installer's rights nor bound
-- into a view that the daemons read.
SET LOCAL search_path = pg_catalog, pg_temp;

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

-- Version 6's table (the version row is added at the end): the key that
-- signs shared heartbeats. A daemon that receives a heartbeat signed with it
-- takes it as proof that every change committed before the heartbeat's
-- snapshot has reached it, so only the installer and the daemon roles
-- (grant_daemon) may read it: any other role can send NOTIFY on the channel,
-- and one that could sign would make daemons serve entries past their bound.
-- 244 random bits from the server's strong random source (gen_random_uuid).
-- To change it: UPDATE tenantcache.heartbeat_key SET key = ...; the daemons
-- read it again when their listener reconnects (until then they send their
-- own heartbeats when they hear none they can verify).
DO $install$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM tenantcache.version WHERE version >= 6) THEN
    CREATE TABLE tenantcache.heartbeat_key (
      id boolean PRIMARY KEY DEFAULT true CHECK (id),
      key bytea NOT NULL CHECK (length(key) >= 16)
    );
    REVOKE ALL ON tenantcache.heartbeat_key FROM PUBLIC;
    INSERT INTO tenantcache.heartbeat_key (key)
      VALUES (decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex'));
    COMMENT ON TABLE tenantcache.heartbeat_key IS
      'signs the daemons'' shared heartbeats: readable by the installer and the daemon roles only';
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
  sent boolean;
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
  -- An assignment, not PERFORM (which would run a query); pg_notify returns
  -- void, which is never NULL.
  sent := pg_notify(s.channel,
    '1 ' || kind::text || ' ' || coalesce(seq::text, '-') ||
    CASE kind WHEN 'k' THEN ' ' || namespace || ' ' || key
              WHEN 't' THEN ' ' || key
              ELSE '' END) IS NOT NULL;
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

-- How a write becomes messages. watch_table attaches, to each watched table:
--  - row-level AFTER INSERT/UPDATE/DELETE triggers whose WHEN clause does the
--    per-row work: for UPDATE it first compares the watched columns of OLD
--    and NEW (as text, see below), so a write that changes nothing watched
--    costs that comparison and nothing more; for a changed row it calls
--    pend() with the row's messages, which records them and returns true
--    only for the row that found nothing pending. PostgreSQL evaluates an
--    AFTER row trigger's WHEN as the row is written and queues the trigger
--    only where it is true: one event for the statement, whatever number of
--    rows it changes. Queued row triggers run when the statement ends, after
--    every row has been written (and so recorded): that one runs
--    on_change(), which sends everything pending (the statement seen whole:
--    bulk_threshold applies to it) with the installer's rights.
--  - an AFTER TRUNCATE trigger (statement level: TRUNCATE has no rows),
--    which sends a flush; on a partitioned table, on each of its partitions
--    too, since a TRUNCATE may name one.
-- Row triggers run whichever table a statement names: the partitioned table
-- or one of its partitions (which carry clones of its row triggers), an
-- inheritance parent or the watched child itself; so do the statements of
-- logical replication's apply worker (with ENABLE ALWAYS or REPLICA), which
-- fires no statement-level trigger. Every row recorded is sent by its own
-- statement's event, or by one queued earlier or in a nested statement (a
-- cascaded update), which sends whatever is pending when it runs; a row
-- recorded after a send finds nothing pending and queues an event again.
--
-- Pending rows live in transaction-local settings (set_config(..., true)):
-- cheap, and rolled back with the statement or the savepoint that wrote them,
-- so a rolled-back write sends nothing. They are the writer's own session
-- state: a writer can put anything there. Pending rows are taken from them
-- only when tenantcache.pending holds the writing transaction's id
-- (anything else, say a value set with SET or ALTER ROLE ... SET, makes
-- pend() start afresh), so a planted list neither holds back a write's
-- messages nor adds to them. tenantcache.mode 'f' set by the session (or
-- as a default of its role or database) does make the WHEN clauses skip
-- pend(), and so holds back that session's messages: the check stays a
-- plain comparison because it is evaluated for every changed row of a bulk
-- statement. A writer can also make its watched writes send invalidations
-- of its choosing; on_change validates every message it sends (_emit:
-- namespace names, key and payload lengths).
--
--   tenantcache.pending  the id of the transaction whose rows are pending
--                        (pg_current_xact_id()), '' once they are sent
--   tenantcache.mode     ''  messages in tenantcache.msgs
--                        'T' too many messages, but each changed row is
--                            covered by its tenant and no key value is new:
--                            tenantcache.msgs holds the tenant messages only
--                        'f' too many messages: one flush
--   tenantcache.msgs     the messages, as the body of a text[] literal
--   tenantcache.count    how many elements tenantcache.msgs holds
--   tenantcache.cap      settings.bulk_threshold, read once per statement
--   tenantcache.new      'y' once a pending row had a new key value
--   tenantcache.bare     'y' once a pending row had no tenant message

-- settings.bulk_threshold, for pend(), which runs as the writing role (which
-- may not read the settings). It reveals nothing secret.
CREATE OR REPLACE FUNCTION tenantcache._bulk_threshold()
RETURNS integer
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT bulk_threshold FROM tenantcache.settings $$;
GRANT EXECUTE ON FUNCTION tenantcache._bulk_threshold() TO PUBLIC;

-- Records one changed row's messages for its statement (see above). Called
-- only from the WHEN clause of the row triggers watch_table generates, as the
-- writing role. `msgs` holds "-k <namespace> <key>" and "-t <tenant id>" for
-- the old row and "+k ..." and "+t ..." for the new row (NULL elements for
-- NULL values). Returns true when this row turned tenantcache.pending on:
-- that row's trigger then runs, at the end of the statement, and sends.
--
-- Invoker's rights, no SET clause (a SET would be paid on every row): it
-- runs nothing but built-in functions, named with their schema, and only
-- writes the calling session's own settings.
CREATE OR REPLACE FUNCTION tenantcache.pend(msgs text[])
RETURNS boolean
LANGUAGE plpgsql
AS $$
DECLARE
  -- Every statement below is an assignment of an expression: PL/pgSQL
  -- evaluates those directly, where PERFORM or SELECT would run a query.
  -- tenantcache.pending holds the id of the transaction whose rows are
  -- pending: any other value (left by nothing of ours, so planted with SET,
  -- ALTER ROLE ... SET or ALTER DATABASE ... SET) is no pending state, and
  -- the other settings are then not read but replaced.
  mine boolean := pg_catalog.current_setting('tenantcache.pending', true)
                  IS NOT DISTINCT FROM pg_catalog.pg_current_xact_id()::text;
  mode text := CASE WHEN mine THEN coalesce(pg_catalog.current_setting('tenantcache.mode', true), '') ELSE '' END;
  m text;
  olds text[] := '{}';
  adds text[] := '{}';
  tenants text[] := '{}';
  new_key boolean := false;
  count integer;
  cap integer;
  msg_list text;
  done text;
  first boolean;
BEGIN
  -- The common write, first of its statement: one row whose messages are
  -- one (a user's key, unchanged by the update, or inserted or deleted).
  -- Each expression costs its first evaluation in every transaction, so
  -- this path evaluates few.
  IF NOT mine AND pg_catalog.cardinality(msgs) <= 2 AND msgs[1] IS NOT NULL
     AND pg_catalog.substr(msgs[1], 2) = pg_catalog.substr(msgs[pg_catalog.cardinality(msgs)], 2) THEN
    m := pg_catalog.substr(msgs[1], 2);
    done := pg_catalog.set_config('tenantcache.pending', pg_catalog.pg_current_xact_id()::text, true)
            || pg_catalog.set_config('tenantcache.mode', '', true)
            || pg_catalog.set_config('tenantcache.cap', '', true)
            || pg_catalog.set_config('tenantcache.msgs', pg_catalog.btrim(ARRAY[m]::text, '{}'), true)
            || pg_catalog.set_config('tenantcache.count', '1', true)
            || pg_catalog.set_config('tenantcache.bare', CASE WHEN pg_catalog.left(m, 1) = 't' THEN '' ELSE 'y' END,
                                     true)
            || pg_catalog.set_config('tenantcache.new',
                                     CASE WHEN msgs[1] LIKE '+k %' AND msgs[pg_catalog.cardinality(msgs)] LIKE '+k %'
                                          THEN 'y' ELSE '' END, true);
    RETURN true;
  END IF;
  -- Lists of messages are kept as the bodies of text[] literals (btrim of
  -- "{...}": array_out quotes an element that contains a brace), so that
  -- they can be joined with a comma and read back whatever the keys contain.
  FOREACH m IN ARRAY msgs LOOP
    IF m IS NOT NULL AND pg_catalog.left(m, 1) = '-' THEN
      olds := olds || pg_catalog.substr(m, 2);
    END IF;
  END LOOP;
  -- The row's distinct messages: the old row's, and the new row's that
  -- differ from them (each one a new key value or tenant).
  FOREACH m IN ARRAY msgs LOOP
    CONTINUE WHEN m IS NULL;
    IF pg_catalog.left(m, 1) = '+' THEN
      m := pg_catalog.substr(m, 2);
      CONTINUE WHEN m = ANY (olds);
      new_key := new_key OR pg_catalog.left(m, 1) = 'k';
    ELSE
      m := pg_catalog.substr(m, 2);
    END IF;
    CONTINUE WHEN m = ANY (adds);
    adds := adds || m;
    IF pg_catalog.left(m, 1) = 't' THEN
      tenants := tenants || m;
    END IF;
  END LOOP;
  IF pg_catalog.cardinality(adds) = 0 THEN
    RETURN false;
  END IF;
  -- From here on something is pending: the answer is whether this row
  -- turned it on.
  first := NOT mine;
  IF first THEN
    done := pg_catalog.set_config('tenantcache.pending', pg_catalog.pg_current_xact_id()::text, true)
            || pg_catalog.set_config('tenantcache.mode', '', true)
            || pg_catalog.set_config('tenantcache.msgs', '', true) || pg_catalog.set_config('tenantcache.count', '0', true)
            || pg_catalog.set_config('tenantcache.new', '', true) || pg_catalog.set_config('tenantcache.bare', '', true)
            || pg_catalog.set_config('tenantcache.cap', '', true);
  END IF;

  IF new_key THEN
    done := pg_catalog.set_config('tenantcache.new', 'y', true);
  END IF;
  IF pg_catalog.cardinality(tenants) = 0 THEN
    done := pg_catalog.set_config('tenantcache.bare', 'y', true);
  END IF;
  count := coalesce(nullif(pg_catalog.current_setting('tenantcache.count', true), ''), '0')::integer;
  msg_list := coalesce(pg_catalog.current_setting('tenantcache.msgs', true), '');
  -- bulk_threshold is at least 1: a statement's first message needs no
  -- look-up (the common single-row write).
  IF count + pg_catalog.cardinality(adds) > 1 THEN
    cap := nullif(pg_catalog.current_setting('tenantcache.cap', true), '')::integer;
    IF cap IS NULL THEN
      cap := tenantcache._bulk_threshold();
      done := pg_catalog.set_config('tenantcache.cap', cap::text, true);
    END IF;
  END IF;

  IF mode = '' THEN
    IF count + pg_catalog.cardinality(adds) <= coalesce(cap, 1) THEN
      done := pg_catalog.set_config('tenantcache.msgs',
        pg_catalog.concat_ws(',', nullif(msg_list, ''), pg_catalog.btrim(adds::text, '{}')), true);
      done := pg_catalog.set_config('tenantcache.count', (count + pg_catalog.cardinality(adds))::text, true);
      RETURN first;
    END IF;
    -- Past the threshold: tenant messages cover every change only when every
    -- row had one and no key value is new (a new key may be cached as
    -- absent, which no tenant message reaches).
    IF pg_catalog.current_setting('tenantcache.new', true) = 'y'
       OR pg_catalog.current_setting('tenantcache.bare', true) = 'y' THEN
      done := tenantcache._pend_flush();
      RETURN first;
    END IF;
    tenants := ARRAY(SELECT DISTINCT e FROM pg_catalog.unnest(('{' || msg_list || '}')::text[] || tenants) e
                      WHERE pg_catalog.left(e, 1) = 't');
    done := pg_catalog.set_config('tenantcache.mode', 'T', true);
  ELSE
    IF pg_catalog.current_setting('tenantcache.new', true) = 'y'
       OR pg_catalog.current_setting('tenantcache.bare', true) = 'y' THEN
      done := tenantcache._pend_flush();
      RETURN first;
    END IF;
    -- Tenant mode: append, and drop the repeats once there are twice as many
    -- as the threshold allows.
    IF count + pg_catalog.cardinality(tenants) <= 2 * cap THEN
      done := pg_catalog.set_config('tenantcache.msgs',
        pg_catalog.concat_ws(',', nullif(msg_list, ''), pg_catalog.btrim(tenants::text, '{}')), true);
      done := pg_catalog.set_config('tenantcache.count', (count + pg_catalog.cardinality(tenants))::text, true);
      RETURN first;
    END IF;
    tenants := ARRAY(SELECT DISTINCT e FROM pg_catalog.unnest(('{' || msg_list || '}')::text[] || tenants) e);
  END IF;
  IF pg_catalog.cardinality(tenants) > cap THEN
    done := tenantcache._pend_flush();
  ELSE
    done := pg_catalog.set_config('tenantcache.msgs', pg_catalog.btrim(tenants::text, '{}'), true);
    done := pg_catalog.set_config('tenantcache.count', pg_catalog.cardinality(tenants)::text, true);
  END IF;
  RETURN first;
END
$$;

-- Switches the pending statement to one flush (see pend).
CREATE OR REPLACE FUNCTION tenantcache._pend_flush()
RETURNS text
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT set_config('tenantcache.mode', 'f', true) || set_config('tenantcache.msgs', '', true)
         || set_config('tenantcache.count', '0', true)
$$;

-- The trigger function (see above): sends what the rows of the statement
-- left pending, and a flush for TRUNCATE. Arguments (set by watch_table,
-- the same on every trigger of a table): tenant column ('' for none), the
-- keys spec (jsonb: namespace -> column), the watched columns ('' for all),
-- the trigger spec's version ("8"). Triggers attached by versions 1 to 4
-- (statement level with transition tables, three arguments) are replaced by
-- the upgrade to version 5, and spec 5's (whose statement-level triggers
-- sent) by install.sql since spec 7; one either could not reach (on another
-- session's temporary table) keeps working as it did: spec 5's send at
-- statement level, and older ones send a flush for every write.
--
-- It runs with the installer's rights (it writes the log and reads the
-- settings, which the writing roles may not). Only tables whose owner holds
-- EXECUTE on this function are served: that grant is what allows a role to
-- watch tables (CREATE TRIGGER checks it too, but only when the trigger is
-- created; a trigger attached before the grant was required, or whose owner
-- lost it, must neither log nor notify). No code the table's owner could
-- have written runs here or in the triggers' WHEN clauses: a column of a
-- type it created may carry its own casts and operators, so values are only
-- ever read as text through their type's output function (format('%s', v)),
-- which only a superuser can define, and compared as those texts.
CREATE OR REPLACE FUNCTION tenantcache.on_change()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  owner_allowed boolean;
  owner_name name;
  mode text;
  msgs text[];
  m text;
  ns text;
  done boolean;
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
  -- Assignments rather than PERFORM where possible: PL/pgSQL evaluates an
  -- expression directly, where PERFORM runs a query.
  IF TG_OP = 'TRUNCATE' OR TG_NARGS < 4 THEN
    done := tenantcache._emit('f', NULL, NULL) IS NULL;
    RETURN NULL;
  END IF;
  mode := current_setting('tenantcache.mode', true);
  msgs := ('{' || coalesce(current_setting('tenantcache.msgs', true), '') || '}')::text[];
  done := set_config('tenantcache.pending', '', true) || set_config('tenantcache.mode', '', true)
          || set_config('tenantcache.msgs', '', true) || set_config('tenantcache.count', '', true)
          || set_config('tenantcache.new', '', true) || set_config('tenantcache.bare', '', true) = '';
  IF mode = 'f' THEN
    done := tenantcache._emit('f', NULL, NULL) IS NULL;
    RETURN NULL;
  END IF;
  IF cardinality(msgs) > 1 THEN
    msgs := ARRAY(SELECT DISTINCT e FROM unnest(msgs) e ORDER BY 1);
  END IF;
  FOREACH m IN ARRAY msgs LOOP
    IF left(m, 2) = 'k ' THEN
      ns := split_part(m, ' ', 2);
      done := tenantcache._emit('k', ns, substr(m, length(ns) + 4)) IS NULL;
    ELSIF left(m, 2) = 't ' THEN
      done := tenantcache._emit('t', NULL, substr(m, 3)) IS NULL;
    ELSE
      RAISE EXCEPTION 'tenantcache: malformed pending message %', quote_literal(m);
    END IF;
  END LOOP;
  RETURN NULL;
END
$$;
-- Watching tables is for the roles the installer allows (see Privileges).
REVOKE ALL ON FUNCTION tenantcache.on_change() FROM PUBLIC;

-- The types whose built-in equality holds exactly when their text is the
-- same (text and varchar compared byte for byte, whatever their collation),
-- so that the triggers compare them without converting them to text. Any
-- other type (numeric 1.0 = 1.00, intervals, floats, and every type a role
-- created, whose operators and casts are its own code) is compared as text.
-- The type of column `col` of `tbl`, when it is one of those.
CREATE OR REPLACE FUNCTION tenantcache._plain_type(tbl regclass, col text)
RETURNS regtype
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT a.atttypid::regtype FROM pg_attribute a
   WHERE a.attrelid = tbl AND a.attname = col AND a.attnum > 0 AND NOT a.attisdropped
     AND a.atttypid IN ('bool'::regtype, 'int2'::regtype, 'int4'::regtype, 'int8'::regtype, 'oid'::regtype,
                        'text'::regtype, 'varchar'::regtype, 'uuid'::regtype, 'date'::regtype,
                        'timestamp'::regtype, 'timestamptz'::regtype, 'bytea'::regtype)
$$;

-- A WHEN-clause expression for column `col` of row `side` (OLD or NEW) as
-- the text of its type's output function, NULL for NULL (num_nulls, because
-- "v IS NULL" is also true of a composite whose fields are all NULL).
-- format('%s', v) calls the output function, which only a superuser can
-- define, but looks it up at every call; an I/O cast (v::text) keeps it, and
-- is what PostgreSQL uses for the plain types but bool (whose cast to text
-- says "true", not "t").
CREATE OR REPLACE FUNCTION tenantcache._text_expr(tbl regclass, side text, col text)
RETURNS text
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT CASE WHEN coalesce(tenantcache._plain_type(tbl, col) <> 'bool'::regtype, false)
              THEN format('%s.%I::text', side, col)
              ELSE format('CASE WHEN num_nulls(%1$s.%2$I) = 0 THEN format(''%%s'', %1$s.%2$I) END', side, col) END
$$;

-- A WHEN-clause expression that is true when column `col` differs between
-- OLD and NEW (as text; see _plain_type).
CREATE OR REPLACE FUNCTION tenantcache._changed_expr(tbl regclass, col text)
RETURNS text
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT CASE WHEN tenantcache._plain_type(tbl, col) IN ('text'::regtype, 'varchar'::regtype)
              THEN format('OLD.%1$I COLLATE "C" IS DISTINCT FROM NEW.%1$I COLLATE "C"', col)
              WHEN tenantcache._plain_type(tbl, col) IS NOT NULL
              THEN format('OLD.%1$I IS DISTINCT FROM NEW.%1$I', col)
              ELSE format('num_nulls(OLD.%1$I) <> num_nulls(NEW.%1$I) OR format(''%%s'', OLD.%1$I) <> '
                          'format(''%%s'', NEW.%1$I)', col) END
$$;

-- The BEFORE UPDATE row triggers of `tbl` and of its partitions but
-- tenantcache's own, as "name on table" (a partition's clone of a trigger
-- of the tree is named once, on the table that has it): such a trigger may
-- change a column that the UPDATE did not name.
CREATE OR REPLACE FUNCTION tenantcache._before_update_triggers(tbl regclass)
RETURNS text[]
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT coalesce(array_agg(format('%I on %s', t.tgname, t.tgrelid::regclass) ORDER BY t.tgrelid::regclass::text,
                            t.tgname), '{}')
    FROM pg_trigger t
   WHERE t.tgrelid IN (SELECT tbl UNION SELECT p.relid FROM pg_partition_tree(tbl) p)
     AND (t.tgparentid = 0 OR t.tgrelid = tbl)
     -- TRIGGER_TYPE_ROW (1) | BEFORE (2) | UPDATE (16), not INSTEAD (64)
     AND t.tgtype & 83 = 19
     AND t.tgfoid <> 'tenantcache.on_change()'::regprocedure
$$;

-- Attaches the triggers described above to `tbl` for a spec watch_table
-- checked (or an older version's triggers carried: see version 5), replacing
-- the ones attached before. `watched` is NULL for all columns.
--
-- With watched columns, the UPDATE trigger is a column trigger (UPDATE OF
-- them) unless the table has a BEFORE UPDATE row trigger: PostgreSQL then
-- skips it, before its WHEN clause, for an UPDATE that names none of them
-- (a login's "SET last_login_at = now()"). That test costs nothing; the
-- WHEN clause is compiled again for every statement that evaluates it,
-- which costs a single-row UPDATE a third more. An UPDATE that names none
-- of them cannot change them but through a BEFORE trigger, which
-- PostgreSQL's column triggers do not see: with one, every UPDATE is
-- compared. One created later is named by watched_tables and the daemons'
-- logs until watch_table runs again.
CREATE OR REPLACE FUNCTION tenantcache._attach(tbl regclass, tenant_col text, keys jsonb, watched text[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  args text := format('%L, %L, %L, ''8''', coalesce(tenant_col, ''), keys::text, coalesce(watched::text, ''));
  update_of text := '';
  part regclass;
  enabled jsonb;
  trg text;
  state text;
  changed text;
  old_msgs text[] := '{}';
  new_msgs text[] := '{}';
  prefix text;
  col text;
BEGIN
  -- Each message: its prefix and the value as text, NULL for NULL.
  FOR prefix, col IN SELECT 'k ' || k.key || ' ', k.value FROM jsonb_each_text(keys) k
                     UNION ALL SELECT 't ', tenant_col WHERE tenant_col IS NOT NULL ORDER BY 1 LOOP
    old_msgs := old_msgs || format('%L || %s', '-' || prefix, tenantcache._text_expr(tbl, 'OLD', col));
    new_msgs := new_msgs || format('%L || %s', '+' || prefix, tenantcache._text_expr(tbl, 'NEW', col));
  END LOOP;
  -- What counts as a change: the whole row's text (every column, including
  -- those added later), or any watched column's.
  IF watched IS NULL THEN
    changed := 'format(''%s'', OLD) <> format(''%s'', NEW)';
  ELSE
    SELECT string_agg(tenantcache._changed_expr(tbl, c), ' OR ' ORDER BY c) INTO changed FROM unnest(watched) c;
  END IF;
  -- Past bulk_threshold a statement sends one flush (pend's mode f): its
  -- remaining rows skip pend and the building of its argument.
  changed := format('(%s) AND pg_catalog.current_setting(''tenantcache.mode'', true) IS DISTINCT FROM ''f''',
                    changed);
  IF watched IS NOT NULL AND cardinality(tenantcache._before_update_triggers(tbl)) = 0 THEN
    SELECT ' OF ' || string_agg(quote_ident(c), ', ' ORDER BY c) INTO update_of FROM unnest(watched) c;
  END IF;
  -- Each trigger's firing state (ALTER TABLE ... ENABLE ALWAYS / REPLICA /
  -- DISABLE TRIGGER, say for a logical replica) outlives the replacement.
  SELECT coalesce(jsonb_object_agg(t.tgname, t.tgenabled), '{}') INTO enabled
    FROM pg_trigger t WHERE t.tgrelid = tbl AND t.tgfoid = 'tenantcache.on_change()'::regprocedure;
  PERFORM tenantcache.unwatch_table(tbl);
  EXECUTE format('CREATE TRIGGER tenantcache_ins AFTER INSERT ON %s FOR EACH ROW '
                 'WHEN (pg_catalog.current_setting(''tenantcache.mode'', true) IS DISTINCT FROM ''f'' '
                 'AND tenantcache.pend(ARRAY[%s]::text[])) EXECUTE FUNCTION tenantcache.on_change(%s)',
                 tbl, array_to_string(new_msgs, ', '), args);
  EXECUTE format('CREATE TRIGGER tenantcache_upd AFTER UPDATE%s ON %s FOR EACH ROW '
                 'WHEN (%s AND tenantcache.pend(ARRAY[%s]::text[])) EXECUTE FUNCTION tenantcache.on_change(%s)',
                 update_of, tbl, changed, array_to_string(old_msgs || new_msgs, ', '), args);
  EXECUTE format('CREATE TRIGGER tenantcache_del AFTER DELETE ON %s FOR EACH ROW '
                 'WHEN (pg_catalog.current_setting(''tenantcache.mode'', true) IS DISTINCT FROM ''f'' '
                 'AND tenantcache.pend(ARRAY[%s]::text[])) EXECUTE FUNCTION tenantcache.on_change(%s)',
                 tbl, array_to_string(old_msgs, ', '), args);
  -- TRUNCATE: on the table and on each of its partitions (PostgreSQL clones
  -- row triggers onto partitions, not statement-level ones). A partition
  -- created or attached later gets the row triggers by itself, but not this
  -- one: watched_tables names it until watch_table is run again.
  FOR part IN SELECT tbl UNION ALL SELECT p.relid FROM pg_partition_tree(tbl) p WHERE p.relid <> tbl LOOP
    EXECUTE format('CREATE TRIGGER tenantcache_trunc AFTER TRUNCATE ON %s FOR EACH STATEMENT '
                   'EXECUTE FUNCTION tenantcache.on_change(%s)', part, args);
  END LOOP;
  -- The table's triggers just created, and the partitions' TRUNCATE ones.
  FOR part, trg, state IN
      SELECT t.tgrelid::regclass, t.tgname, enabled ->> t.tgname
        FROM pg_trigger t
       WHERE t.tgfoid = 'tenantcache.on_change()'::regprocedure AND t.tgparentid = 0
         AND t.tgrelid IN (SELECT p.relid FROM pg_partition_tree(tbl) p UNION SELECT tbl)
         AND (enabled ->> t.tgname) <> 'O' LOOP
    EXECUTE format('ALTER TABLE %s %s TRIGGER %I', part,
                   CASE state WHEN 'A' THEN 'ENABLE ALWAYS' WHEN 'R' THEN 'ENABLE REPLICA' ELSE 'DISABLE' END, trg);
  END LOOP;
END
$$;

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
  owner_id oid;
  who text;
  served text[];
  unserved text[];
  before_triggers text[];
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

  served := tenantcache.served_namespaces();
  PERFORM tenantcache._attach(tbl, tenant_column, keys, watched);
  before_triggers := CASE WHEN watched IS NOT NULL THEN tenantcache._before_update_triggers(tbl) END;
  IF cardinality(before_triggers) > 0 THEN
    RAISE NOTICE 'tenantcache: watch_table: table % has BEFORE UPDATE triggers (%), which may change a watched '
                 'column that an UPDATE does not name: every UPDATE of it compares the watched columns',
                 tbl, array_to_string(before_triggers, ', ')
      USING HINT = 'Without them, an UPDATE that names no watched column would cost nothing (see _attach in '
                   'sql/install.sql).';
  END IF;
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
  part regclass;
  found_any boolean := false;
BEGIN
  FOR t IN SELECT tgname FROM pg_trigger
            WHERE tgrelid = tbl AND tgfoid = 'tenantcache.on_change()'::regprocedure LOOP
    EXECUTE format('DROP TRIGGER %I ON %s', t, tbl);
    found_any := true;
  END LOOP;
  -- The TRUNCATE triggers _attach put on the partitions (the row triggers'
  -- clones went with the table's).
  FOR t, part IN SELECT tr.tgname, tr.tgrelid::regclass FROM pg_partition_tree(tbl) p
                   JOIN pg_trigger tr ON tr.tgrelid = p.relid
                  WHERE p.relid <> tbl AND tr.tgfoid = 'tenantcache.on_change()'::regprocedure
                    AND tr.tgparentid = 0 AND tr.tgtype & 32 <> 0 LOOP
    EXECUTE format('DROP TRIGGER %I ON %s', t, part);
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

-- Upgrades: grants `privilege` (e.g. 'SELECT ON tenantcache.heartbeat_key')
-- to the daemon roles, those that may record a daemon (EXECUTE on
-- daemon_seen, given by grant_daemon), and tells the installer who.
CREATE OR REPLACE FUNCTION tenantcache._grant_daemon_roles(privilege text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  r record;
BEGIN
  FOR r IN SELECT DISTINCT a.grantee::regrole AS grantee
             FROM pg_proc p, aclexplode(p.proacl) a
            WHERE p.oid = 'tenantcache.daemon_seen(text, text[])'::regprocedure
              AND a.privilege_type = 'EXECUTE' AND a.grantee <> 0 AND a.grantee <> p.proowner
            ORDER BY 1 LOOP
    EXECUTE format('GRANT %s TO %s', privilege, r.grantee);
    RAISE NOTICE 'tenantcache: granted % to daemon role %', privilege, r.grantee;
  END LOOP;
END
$$;
REVOKE ALL ON FUNCTION tenantcache._grant_daemon_roles(text) FROM PUBLIC;

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
-- column), of those namespaces the ones no daemon seen in the last 5
-- minutes serves (NULL when no daemon reported: unknown), and the
-- partitions created or attached since watch_table last ran, whose
-- TRUNCATE sends nothing until it runs again (see _attach), and the BEFORE
-- UPDATE triggers created since then on a table whose UPDATE trigger is a
-- column trigger: a change one makes to a watched column that the UPDATE
-- did not name is not sent until watch_table runs again (see _attach).
CREATE OR REPLACE VIEW tenantcache.watched_tables AS
SELECT w.table_name, w.tenant_column, w.triggers, w.keys,
       CASE WHEN s.served IS NOT NULL
            THEN ARRAY(SELECT k FROM jsonb_object_keys(w.keys) k WHERE k <> ALL (s.served) ORDER BY k) END
         AS unserved_keys,
       ARRAY(SELECT p.relid FROM pg_partition_tree(w.table_name) p
              WHERE p.relid <> w.table_name
                AND NOT EXISTS (SELECT 1 FROM pg_trigger pt
                                 WHERE pt.tgrelid = p.relid AND pt.tgtype & 32 <> 0
                                   AND pt.tgfoid = 'tenantcache.on_change()'::regprocedure)
              ORDER BY p.level, p.relid::regclass::text) AS partitions_without_truncate_trigger,
       CASE WHEN w.update_of THEN tenantcache._before_update_triggers(w.table_name) ELSE '{}' END
         AS unseen_before_update_triggers
  FROM (SELECT t.tgrelid::regclass AS table_name,
               nullif(convert_from(split_part(encode(t.tgargs, 'escape'), '\000', 1)::bytea, 'UTF8'), '')
                 AS tenant_column,
               count(*) AS triggers,
               convert_from(split_part(encode(t.tgargs, 'escape'), '\000', 2)::bytea, 'UTF8')::jsonb AS keys,
               -- TRIGGER_TYPE_UPDATE is 16
               bool_or(t.tgtype & 16 <> 0 AND cardinality(t.tgattr::int2[]) > 0) AS update_of
          FROM pg_trigger t
         WHERE t.tgfoid = 'tenantcache.on_change()'::regprocedure
           AND t.tgparentid = 0  -- not a partition's clone of its table's trigger
         GROUP BY 1, 2, 4
        -- a partition whose only trigger is TRUNCATE's (TRIGGER_TYPE_TRUNCATE
        -- is 32) is watched through its partitioned table
        HAVING bool_or(t.tgtype & 32 = 0)) w
 CROSS JOIN (SELECT tenantcache.served_namespaces() AS served) s;

-- What a daemon's database role lacks of what the daemon does in this
-- schema (read the version, the settings, the watched tables and the
-- invalidation log, which it replays after a reconnect; record its
-- namespaces; prune the log; sign and verify shared heartbeats), as the privileges to GRANT ("SELECT ON tenantcache.version",
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
       has_function_privilege(daemon_role, 'tenantcache.daemon_prune_log(text, interval)', 'EXECUTE')),
      (8, 'SELECT ON tenantcache.heartbeat_key',
       has_table_privilege(daemon_role, 'tenantcache.heartbeat_key', 'SELECT'))
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
BEGIN
  IF NOT EXISTS (SELECT 1 FROM tenantcache.version WHERE version >= 4) THEN
    PERFORM tenantcache._grant_daemon_roles('EXECUTE ON FUNCTION tenantcache.daemon_prune_log(text, interval)');
    INSERT INTO tenantcache.version (version) VALUES (4);
  END IF;
END
$install$;

-- The watched permanent tables whose triggers an older spec version
-- attached (the trigger arguments' fourth element, absent before version 5;
-- _attach writes "8"), with the spec their arguments hold. A partition's
-- clones and TRUNCATE trigger go with its partitioned table's; a trigger on
-- a temporary table is left alone (only its own session can reach it).
CREATE OR REPLACE FUNCTION tenantcache._outdated_watches()
RETURNS TABLE (tbl regclass, owner_id oid, tenant_col text, keys jsonb, watched text[])
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT DISTINCT t.tgrelid::regclass, c.relowner,
         nullif(convert_from(split_part(encode(t.tgargs, 'escape'), '\000', 1)::bytea, 'UTF8'), ''),
         convert_from(split_part(encode(t.tgargs, 'escape'), '\000', 2)::bytea, 'UTF8')::jsonb,
         nullif(convert_from(split_part(encode(t.tgargs, 'escape'), '\000', 3)::bytea, 'UTF8'), '')::text[]
    FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
   WHERE t.tgfoid = 'tenantcache.on_change()'::regprocedure AND c.relpersistence <> 't'
     AND t.tgparentid = 0 AND t.tgtype & 32 = 0  -- TRIGGER_TYPE_TRUNCATE
     AND convert_from(split_part(encode(t.tgargs, 'escape'), '\000', 4)::bytea, 'UTF8') <> '8'
$$;
REVOKE ALL ON FUNCTION tenantcache._outdated_watches() FROM PUBLIC;

-- For `upgrade` ("version 5", say): attaches the triggers again to every
-- table of _outdated_watches(), from its spec. That takes the right to
-- create triggers on those tables. When the installer may not: if `strict`,
-- it stops before changing anything, naming the tables; otherwise (the old
-- triggers still send what they did) it replaces the others and a WARNING
-- names those it left.
CREATE OR REPLACE FUNCTION tenantcache._reattach_watched(upgrade text, strict boolean)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  r record;
  unreachable text;
BEGIN
  SELECT string_agg(DISTINCT format('%s (owner %I)', w.tbl, pg_get_userbyid(w.owner_id)), ', ')
    INTO unreachable
    FROM tenantcache._outdated_watches() w WHERE NOT pg_has_role(current_user, w.owner_id, 'USAGE');
  IF unreachable IS NOT NULL AND strict THEN
    RAISE EXCEPTION 'tenantcache: the upgrade to % replaces the triggers of the watched tables, and role % '
                    'may not: %', upgrade, quote_ident(current_user), unreachable
      USING HINT = 'Run sql/install.sql as a superuser or as a role that is a member of those owners.';
  END IF;
  IF unreachable IS NOT NULL THEN
    RAISE WARNING 'tenantcache: the upgrade to % replaces the triggers of the watched tables, and role % '
                  'may not: % keep their older triggers', upgrade, quote_ident(current_user), unreachable
      USING HINT = 'Run sql/install.sql again as a superuser or as a role that is a member of those owners.';
  END IF;
  FOR r IN SELECT * FROM tenantcache._outdated_watches() w WHERE pg_has_role(current_user, w.owner_id, 'USAGE')
            ORDER BY 1 LOOP
    PERFORM tenantcache._attach(r.tbl, r.tenant_col, r.keys, r.watched);
  END LOOP;
END
$$;
REVOKE ALL ON FUNCTION tenantcache._reattach_watched(text, boolean) FROM PUBLIC;

-- Version 5: the triggers skip what they do not watch (row-level WHEN
-- clauses; see on_change). The triggers attached by versions 1 to 4 are
-- replaced in place, with the spec in their arguments (no watch_table call
-- needed): see _reattach_watched. A trigger on a temporary table is left
-- alone: it sends a flush for each write until its session ends.
DO $install$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM tenantcache.version WHERE version >= 5) THEN
    PERFORM tenantcache._reattach_watched('version 5', true);
    -- Versions 2 to 4's helper for on_change, which no longer sees sets.
    IF to_regprocedure('tenantcache._send_changes(jsonb[], boolean[], text, text, jsonb)') IS NOT NULL THEN
      DROP FUNCTION tenantcache._send_changes(jsonb[], boolean[], text, text, jsonb);
    END IF;
    INSERT INTO tenantcache.version (version) VALUES (5);
  END IF;
END
$install$;

-- Version 6: shared heartbeats (tenantcache.heartbeat_key, created above).
-- The daemon roles (those allowed daemon_seen) may read the key, so that
-- their daemons share heartbeats after the upgrade; the installer is told
-- who. The daemon still accepts versions 1 to 5 (each daemon then sends its
-- own heartbeats).
DO $install$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM tenantcache.version WHERE version >= 6) THEN
    PERFORM tenantcache._grant_daemon_roles('SELECT ON tenantcache.heartbeat_key');
    INSERT INTO tenantcache.version (version) VALUES (6);
  END IF;
END
$install$;

-- Trigger specs 7 and 8 (within schema version 6: the messages are the
-- same, so running daemons need nothing new). Spec 7: no statement-level
-- triggers but TRUNCATE's. The row that finds nothing pending runs its row
-- trigger, which sends at the end of the statement (see on_change), so that
-- a write is sent whichever table its statement names (a partition of a
-- watched partitioned table, the parent of a watched inheritance child) and
-- from logical replication's apply worker, where spec 5's statement-level
-- triggers did not run; a partition's TRUNCATE flushes. Spec 8: with
-- watched columns, the UPDATE trigger is a column trigger where no BEFORE
-- UPDATE trigger could change them (see _attach). Older triggers are
-- replaced in place (see _reattach_watched); those of a table the installer
-- may not alter, with a WARNING, and one on another session's temporary
-- table keep sending as they did.
DO $install$
BEGIN
  PERFORM tenantcache._reattach_watched('trigger spec 8', false);
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
