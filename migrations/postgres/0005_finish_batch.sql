-- A batch's commit is one statement (src/store/pg/pg-batch-writer.ts). It ends by calling
-- this with the runs whose rows it matched (held by the node at its epoch, or created by
-- it), the runs it touched, and a notice per matched run. A run touched and not held aborts
-- the statement, and with it the whole batch, with SQLSTATE FL001 and the run's id as the
-- detail; otherwise the notices go out on `channel` (PostgreSQL sends them at the commit).
CREATE FUNCTION flowd_finish_batch(channel text, held text[], touched text[], notices text[]) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  lost text;
  notice text;
BEGIN
  SELECT t INTO lost FROM unnest(touched) AS t WHERE t <> ALL (coalesce(held, '{}'::text[])) LIMIT 1;
  IF lost IS NOT NULL THEN
    RAISE EXCEPTION 'run % is not held by this node at its lease epoch', lost USING ERRCODE = 'FL001', DETAIL = lost;
  END IF;
  FOREACH notice IN ARRAY coalesce(notices, '{}'::text[]) LOOP
    PERFORM pg_notify(channel, notice);
  END LOOP;
END
$$;
