"""Singer tap for Braze segment CSV exports: zip, gzip, PGP, local or SFTP (Meltano SDK)."""
