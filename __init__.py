"""scorejax: score-based generative modeling in JAX/Flax.

The repository root is the package: `pip install -e .` makes its folders importable as
`scorejax.sde_lib`, `scorejax.models`, `scorejax.samplers`, ... (see pyproject.toml).
"""
