"""mielib: a reproducibility companion for micro-expression research.

The library behind the numbered notebooks in notebooks/. Each module is one concept; see the
README glossary for the words they use.
"""

__version__ = "0.1.0"
