"""Images in, splits out: class folders of PNGs (`folders`), the embedded generated default
(`synthetic`, drawing CT-like `phantom`s), scan `groups`, the splits every later stage reads
(`splits`, chosen by `sources`) and the `leakage` probe of a split.
"""
