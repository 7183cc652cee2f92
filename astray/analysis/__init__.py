"""What a sweep found, and the report that shows it.

``read`` (the only file reader) → ``compute`` (fronts, hypervolumes, savings: pure) →
``figures`` and ``document`` (render) → ``report`` (writes the files). ``model`` holds
the typed records they pass along; ``pareto`` the dominance and hypervolume maths.
"""
