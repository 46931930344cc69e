"""Everything Ray: entry points (sweep, pretrain, distill, evaluate, report), configs, the results
store, the teacher registry, TensorBoard and the evaluation actor pool."""
