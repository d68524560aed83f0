"""The radiomics baseline `radiomics-<SEQ>`: MIRP features (`features`, `extract`), the
cross-validated L1 logistic regression (`model`), its run folder (`run`) and command (`cli`)."""
