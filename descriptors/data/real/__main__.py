"""``python -m descriptors.data.real {brown,hpatches} --data-root D --cache-dir C``."""

from .portable import main

main()
