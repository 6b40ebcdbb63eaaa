-- An import batch (issue 15) raises its own session's pending-list limit for the
-- trigram and properties GIN indexes and merges their pending lists once, before
-- it commits (src/store/postgres/write_tx.rs): far less page work than merging every
-- 64 kB. The limit set on the indexes themselves (0003, 0007) overrides every
-- session's, so it moves to the database's default for new sessions, where
-- ordinary writes keep the small list 0003 chose. A database default, unlike the
-- connection's startup options, reaches every server connection a pooler in
-- transaction mode hands out, and costs no statement per write.
--
-- ALTER DATABASE ... SET needs the database's owner (or a superuser). A role that
-- is neither leaves the indexes as they were: every write then merges at 64 kB as
-- before, imports included, and search stays exact either way.
DO $$
BEGIN
    IF pg_has_role((SELECT datdba FROM pg_database WHERE datname = current_database()),
                   'USAGE') THEN
        EXECUTE format('ALTER DATABASE %I SET gin_pending_list_limit = %L',
                       current_database(), '64kB');
        ALTER INDEX contacts_search_tenant RESET (gin_pending_list_limit);
        ALTER INDEX contacts_properties_tenant RESET (gin_pending_list_limit);
        -- The database default reaches new sessions only; this one (the service's
        -- first connection when `serve` migrates) is set by hand.
        SET gin_pending_list_limit = '64kB';
    ELSE
        RAISE WARNING USING MESSAGE = format(
            'kraiter-contacts: %s does not own database %s, so the GIN indexes keep their '
            || '64 kB pending-list limit and imports cannot raise it; to apply, as the '
            || 'owner: ALTER DATABASE %s SET gin_pending_list_limit = ''64kB''; ALTER INDEX '
            || 'contacts_search_tenant RESET (gin_pending_list_limit); ALTER INDEX '
            || 'contacts_properties_tenant RESET (gin_pending_list_limit);',
            current_user, current_database(), quote_ident(current_database()));
    END IF;
END
$$;
