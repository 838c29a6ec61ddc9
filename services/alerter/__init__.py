"""The alerter: critical and worse to the console and a webhook, repeats folded, rate-limited."""
