"""The data layer: volumes (.npy, SEG-Y, synthetic), their validation, and the sections
cut from them. Imports only ``core``."""
