"""Images in, splits out: class folders of PNGs (`folders`), the embedded generated default
(`synthetic`, drawing CT-like `phantom`s), and the stratified splits every later stage reads
(`splits`).
"""
