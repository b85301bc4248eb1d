"""Customer scoring (客户评分, SPEC §4): configurable points, explainable 0–100 scores, grades, hot
crossings, a naive-Bayes win probability and the "hot share" report."""
