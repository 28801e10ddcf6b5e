"""
``python -m glimpse.cli``: the ``glimpse`` command.
"""

from glimpse.cli.main import run

if __name__ == "__main__":
    run()
