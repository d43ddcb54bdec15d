-- no-transaction
-- Secure trunks: transport `tls`; TLS trust and client certificate (PEM; the private key is
-- write-only on the API), whether the certificate is verified, and media encryption (SRTP
-- with SDES keys). SQLite cannot change the transport's CHECK, so the table is rebuilt
-- (SQLite's documented procedure, as in 0007).
PRAGMA foreign_keys = OFF;
BEGIN;
CREATE TABLE trunks_rebuilt (
    id                   TEXT PRIMARY KEY,
    name                 TEXT NOT NULL,
    host                 TEXT NOT NULL,
    port                 INTEGER NOT NULL,
    transport            TEXT NOT NULL CHECK (transport IN ('udp', 'tcp', 'tls')),
    username             TEXT,
    password             TEXT,
    realm                TEXT,
    from_domain          TEXT,
    max_concurrent_calls INTEGER,
    max_calls_per_second INTEGER,
    created_at           INTEGER NOT NULL,
    updated_at           INTEGER NOT NULL,
    deleted_at           INTEGER,
    org_id               TEXT REFERENCES organizations (id),
    register             INTEGER NOT NULL DEFAULT 0,
    tls_ca_pem           TEXT,
    tls_verify           INTEGER NOT NULL DEFAULT 1,
    tls_client_cert_pem  TEXT,
    tls_client_key_pem   TEXT,
    srtp                 TEXT NOT NULL DEFAULT 'off' CHECK (srtp IN ('off', 'optional', 'required'))
);
INSERT INTO trunks_rebuilt (id, name, host, port, transport, username, password, realm,
    from_domain, max_concurrent_calls, max_calls_per_second, created_at, updated_at,
    deleted_at, org_id, register)
SELECT id, name, host, port, transport, username, password, realm, from_domain,
    max_concurrent_calls, max_calls_per_second, created_at, updated_at, deleted_at, org_id,
    register
FROM trunks;
DROP TABLE trunks;
ALTER TABLE trunks_rebuilt RENAME TO trunks;
CREATE UNIQUE INDEX trunks_name_per_organisation ON trunks (org_id, name) WHERE deleted_at IS NULL;
COMMIT;
PRAGMA foreign_keys = ON;
