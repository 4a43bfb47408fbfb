-- Removes everything sql/install.sql and tenantcache.watch_table() created:
-- the triggers on your tables, then schema "tenantcache" with its log.
--
--   psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -f sql/uninstall.sql
BEGIN;

-- Everything below names its objects with their schema or finds them in
-- pg_catalog. A function or operator another role put in a schema of the
-- uninstaller's search_path (public, where every role could create objects
-- before PostgreSQL 15) that matches some arguments better than
-- pg_catalog's must not be called with the uninstaller's rights.
SET LOCAL search_path = pg_catalog, pg_temp;

-- The triggers on tables this role may alter are dropped one by one. Another
-- role's trigger (say, on a temporary table of its own session) cannot be
-- dropped that way; dropping the schema below removes it with the function
-- it calls, and a NOTICE names it.
DO $uninstall$
DECLARE
  t record;
BEGIN
  IF to_regnamespace('tenantcache') IS NULL THEN
    RETURN;
  END IF;
  FOR t IN SELECT tr.tgname, tr.tgrelid::regclass AS tbl, pg_get_userbyid(c.relowner) AS owner_name,
                  pg_has_role(current_user, c.relowner, 'USAGE')
                    AND (c.relpersistence <> 't' OR c.relnamespace = pg_my_temp_schema()) AS droppable
             FROM pg_trigger tr
             JOIN pg_proc p ON p.oid = tr.tgfoid
             JOIN pg_class c ON c.oid = tr.tgrelid
            WHERE p.pronamespace = 'tenantcache'::regnamespace
              AND tr.tgparentid = 0 LOOP  -- a partition's clone goes with its parent's trigger
    IF t.droppable THEN
      EXECUTE format('DROP TRIGGER %I ON %s', t.tgname, t.tbl);
    ELSE
      RAISE NOTICE 'tenantcache: trigger % on %, owned by %, is removed with schema tenantcache',
        quote_ident(t.tgname), t.tbl, quote_ident(t.owner_name);
    END IF;
  END LOOP;
END
$uninstall$;

DROP SCHEMA IF EXISTS tenantcache CASCADE;

COMMIT;
