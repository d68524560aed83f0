"""The radiomics feature families by their names in the settings, and the prefix of MIRP's
feature names in each."""

FAMILIES = {"morphology": "morph_", "statistics": "stat_", "glcm": "cm_", "glrlm": "rlm_",
            "glszm": "szm_", "ngtdm": "ngt_", "ngldm": "ngl_"}
# The texture families: left empty for a mask too small or an image constant inside it.
TEXTURE = ("glcm", "glrlm", "glszm", "ngtdm", "ngldm")
