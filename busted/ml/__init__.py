"""Behavioural classification: what kind of traffic a connection carries, judged from how
it behaves (sizes, timing, direction changes) rather than from its plaintext.

- :mod:`busted.ml.features`: the fixed, ordered feature vector of one exchange
  (a ``TCP_EXCHANGE`` event's ``exchange`` statistics, made in the kernel);
- :mod:`busted.ml.labels`: labels from busted's own classifier, joined on the connection;
- :mod:`busted.ml.model`: the model file (plain JSON: trees, never a pickle) and its
  evaluator, which gives the same probabilities as scikit-learn without importing it;
- :mod:`busted.ml.train`: fitting and scoring with scikit-learn (offline only);
- :mod:`busted.ml.gather`: reproducible training traffic (``busted ml gather``).
"""
