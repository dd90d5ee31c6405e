"""Reference models built from fxkernels layers (MOL, MTSTWN, DSID, STT, MTCAE-DFER); added family by family."""
