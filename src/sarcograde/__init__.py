"""sarcograde: soft-tissue sarcoma grading from MRI (Navarro et al., Cancers 2021)."""

__version__ = "0.2.0"

LABELS = ("low", "high")  # class 0 = FNCLCC G1, class 1 = G2/G3
