"""Sample quality in the field's units: feature networks (Inception-v3 of the FID literature, a digits
classifier trained here) and the metrics computed over their features (FID, IS, KID, precision/recall).

This layer sees arrays (samples, data, labels) only: never a model, a sampler or a config."""
