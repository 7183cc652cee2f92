"""What a sweep found, and the report that shows it.

``read`` (the only file reader) → ``compute`` (configurations, fronts, hypervolumes,
savings, the advantage over training less: pure) → ``figures`` and ``document`` (render)
→ ``report`` (writes the files). ``model`` holds the typed records they pass along;
``pareto`` the dominance and hypervolume maths; ``frontier`` the replicate statistics and
the dense frontier's (docs/design.md §9).
"""
