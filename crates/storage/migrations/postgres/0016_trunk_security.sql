-- Secure trunks: transport `tls`; TLS trust and client certificate (PEM; the private key is
-- write-only on the API), whether the certificate is verified, and media encryption (SRTP
-- with SDES keys).
ALTER TABLE trunks DROP CONSTRAINT trunks_transport_check;
ALTER TABLE trunks ADD CONSTRAINT trunks_transport_check CHECK (transport IN ('udp', 'tcp', 'tls'));
ALTER TABLE trunks ADD COLUMN tls_ca_pem TEXT;
ALTER TABLE trunks ADD COLUMN tls_verify BIGINT NOT NULL DEFAULT 1;
ALTER TABLE trunks ADD COLUMN tls_client_cert_pem TEXT;
ALTER TABLE trunks ADD COLUMN tls_client_key_pem TEXT;
ALTER TABLE trunks ADD COLUMN srtp TEXT NOT NULL DEFAULT 'off' CHECK (srtp IN ('off', 'optional', 'required'));
