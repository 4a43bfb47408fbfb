-- Removes everything sql/install.sql and tenantcache.watch_table() created:
-- the triggers on your tables, then schema "tenantcache" with its log.
--
--   psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -f sql/uninstall.sql
BEGIN;

DO $uninstall$
DECLARE
  t record;
BEGIN
  IF to_regnamespace('tenantcache') IS NULL THEN
    RETURN;
  END IF;
  FOR t IN SELECT tr.tgname, tr.tgrelid::regclass AS tbl
             FROM pg_trigger tr
             JOIN pg_proc p ON p.oid = tr.tgfoid
            WHERE p.pronamespace = 'tenantcache'::regnamespace LOOP
    EXECUTE format('DROP TRIGGER %I ON %s', t.tgname, t.tbl);
  END LOOP;
END
$uninstall$;

DROP SCHEMA IF EXISTS tenantcache CASCADE;

COMMIT;
