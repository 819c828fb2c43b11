"""Where prediction bits come from: oracles (evaluation only), noise, a learned model, hints."""
