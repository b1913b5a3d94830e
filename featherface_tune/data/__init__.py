"""WIDERFace data: annotation readers for both on-disk layouts, the synthetic demo dataset, and the
shared record type every loader returns."""
