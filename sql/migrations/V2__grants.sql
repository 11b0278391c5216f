-- Least privilege. Each service asserts at start that it holds exactly what it needs.
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM PUBLIC;

GRANT USAGE ON SCHEMA public TO ace_writer, ace_reader, ace_anchor, ace_dashboard;

-- writer: appends to the log, reads the registry, writes DLQ rows.
GRANT SELECT ON producers, producer_keys TO ace_writer;
GRANT SELECT, INSERT ON ledger_entries, ledger_subjects, ledger_tiles, ledger_blocks, dlq_items TO ace_writer;
GRANT USAGE ON SEQUENCE dlq_items_id_seq TO ace_writer;

-- reader: reads everything, writes nothing.
GRANT SELECT ON producers, producer_keys, ledger_entries, ledger_subjects, ledger_tiles, ledger_blocks, dlq_items TO ace_reader;
