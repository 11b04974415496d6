"""Per-document steps, one shape each (document in, document or Reject out): the chain, PII masking and decontamination."""
