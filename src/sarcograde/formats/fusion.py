"""What `fusion fit` writes into its folder (docs/artifacts.md): model.json, the logistic
regressions of the late fusion (`sarcograde.fusion`), read by `fusion apply`."""

FUSION_MODEL = "model.json"
