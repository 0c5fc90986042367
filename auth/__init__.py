"""auth: the mesh certificate authority (SPIFFE identities, CSR signing, rotation)."""
