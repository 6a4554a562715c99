"""``python -m d2kd.data.synthetic``: see :mod:`d2kd.data.synthetic.cli`."""

from .cli import main

main()
