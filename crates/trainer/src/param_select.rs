//! Selecting parameters by glob patterns over their names (`--freeze`,
//! `--train-only`, `--lr-scale`, `--lora-targets`), and the named groups
//! `diffuse info --params` shows. `*` crosses dots (`down.*` is the whole
//! down path). A pattern that matches nothing is an error listing the
//! closest names, so a typo never silently trains the whole model.

use crate::config::LrScale;
use crate::{Error, Result};
use globset::{Glob, GlobMatcher};
use std::collections::BTreeSet;

/// One compiled pattern.
pub struct Pattern {
    pub text: String,
    matcher: GlobMatcher,
}

impl Pattern {
    pub fn new(text: &str, flag: &str) -> Result<Pattern> {
        let glob = Glob::new(text).map_err(|e| Error::Config(format!("{flag} {text:?} is not a glob pattern: {e}")))?;
        Ok(Pattern { text: text.to_string(), matcher: glob.compile_matcher() })
    }

    pub fn is_match(&self, name: &str) -> bool {
        self.matcher.is_match(name)
    }
}

/// Compiles `patterns` and checks that each matches at least one of `names`.
pub fn compile(patterns: &[String], names: &[&str], flag: &str) -> Result<Vec<Pattern>> {
    patterns
        .iter()
        .map(|text| {
            let p = Pattern::new(text, flag)?;
            if !names.iter().any(|n| p.is_match(n)) {
                let close = close_names(text, names);
                let hint =
                    if close.is_empty() { String::new() } else { format!("; close names: {}", close.join(", ")) };
                return Err(Error::Config(format!(
                    "{flag} {text:?} matches no parameter{hint} (`diffuse info --params` lists them)"
                )));
            }
            Ok(p)
        })
        .collect()
}

/// Which parameters train: all, or those matching `train_only` when given,
/// minus those matching `freeze`.
pub fn trainable_mask(names: &[&str], freeze: &[String], train_only: &[String]) -> Result<Vec<bool>> {
    let only = compile(train_only, names, "--train-only")?;
    let frozen = compile(freeze, names, "--freeze")?;
    Ok(names
        .iter()
        .map(|n| (only.is_empty() || only.iter().any(|p| p.is_match(n))) && !frozen.iter().any(|p| p.is_match(n)))
        .collect())
}

/// The learning-rate factor of every parameter (1 unless a pattern says
/// otherwise; the last matching entry wins).
pub fn lr_scales(names: &[&str], specs: &[LrScale]) -> Result<Vec<f64>> {
    let texts: Vec<String> = specs.iter().map(|s| s.pattern.clone()).collect();
    let patterns = compile(&texts, names, "--lr-scale")?;
    Ok(names
        .iter()
        .map(|n| {
            patterns.iter().zip(specs).filter(|(p, _)| p.is_match(n)).map(|(_, s)| s.scale).next_back().unwrap_or(1.0)
        })
        .collect())
}

/// Every dotted prefix of every name (as `prefix.*`) and the names
/// themselves: what a pattern could have meant.
fn candidates(names: &[&str]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for n in names {
        let parts: Vec<&str> = n.split('.').collect();
        for k in 1..parts.len() {
            out.insert(format!("{}.*", parts[..k].join(".")));
        }
        out.insert(n.to_string());
    }
    out
}

/// Up to five names or `prefix.*` patterns within a small edit distance of `pattern`.
pub fn close_names(pattern: &str, names: &[&str]) -> Vec<String> {
    let limit = (pattern.chars().count() / 3).max(3);
    let mut scored: Vec<(usize, String)> = candidates(names)
        .into_iter()
        .map(|c| (strsim::levenshtein(pattern, &c), c))
        .filter(|(d, _)| *d <= limit)
        .collect();
    scored.sort();
    scored.into_iter().take(5).map(|(_, c)| c).collect()
}

/// A named set of parameters and the pattern that selects it.
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    pub kind: &'static str,
    pub pattern: String,
    pub tensors: usize,
    pub scalars: usize,
}

/// The groups a pattern can name, for `diffuse info --params`: the time
/// embedding, input/output layers, the middle, attention, norms, each level
/// of each path, each block, and the LoRA adapters when there are any.
/// `params` is (name, scalar count) in registration order.
pub fn groups(params: &[(&str, usize)]) -> Vec<Group> {
    let mut specs: Vec<(&'static str, String)> = vec![
        ("time embedding", "temb_*".into()),
        ("input conv", "conv_in.*".into()),
        ("middle", "mid_*".into()),
        ("attention", "*attn*".into()),
        ("attention projections", "*attn*.{q,k,v,proj_out}.*".into()),
        ("norms", "*norm*".into()),
        ("output", "{norm_out,conv_out}.*".into()),
        ("LoRA adapters", "*.lora_*".into()),
    ];
    let mut seen = BTreeSet::new();
    for (name, _) in params {
        let parts: Vec<&str> = name.split('.').collect();
        if matches!(parts.first(), Some(&"down") | Some(&"up")) && parts.len() > 2 {
            let level = parts[..2].join(".");
            if seen.insert(level.clone()) {
                specs.push(("level", format!("{level}.*")));
            }
            if parts.len() > 4 && (parts[2] == "blocks" || parts[2] == "attns") {
                let block = parts[..4].join(".");
                if seen.insert(block.clone()) {
                    specs.push((if parts[2] == "blocks" { "block" } else { "attention block" }, format!("{block}.*")));
                }
            } else if parts[2] == "downsample" || parts[2] == "upsample" {
                let r = parts[..3].join(".");
                if seen.insert(r.clone()) {
                    specs.push(("resample", format!("{r}.*")));
                }
            }
        }
    }
    for b in ["mid_block1", "mid_block2", "mid_attn"] {
        specs.push((if b == "mid_attn" { "attention block" } else { "block" }, format!("{b}.*")));
    }
    specs
        .into_iter()
        .filter_map(|(kind, pattern)| {
            let p = Pattern::new(&pattern, "group").ok()?;
            let hits: Vec<usize> = params.iter().filter(|(n, _)| p.is_match(n)).map(|(_, c)| *c).collect();
            (!hits.is_empty()).then(|| Group { kind, pattern, tensors: hits.len(), scalars: hits.iter().sum() })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: [&str; 6] = [
        "temb_dense0.weight",
        "down.0.blocks.0.conv1.weight",
        "down.0.blocks.0.norm1.bias",
        "mid_attn.q.weight",
        "up.1.attns.0.proj_out.bias",
        "conv_out.weight",
    ];

    #[test]
    fn star_crosses_dots_and_train_only_then_freeze() {
        let m = trainable_mask(&NAMES, &["*norm*".into()], &["down.*".into(), "*attn*".into()]).unwrap();
        assert_eq!(m, [false, true, false, true, true, false]);
    }

    #[test]
    fn a_pattern_that_matches_nothing_lists_close_names() {
        let e = trainable_mask(&NAMES, &["down.0.block.*".into()], &[]).unwrap_err().to_string();
        assert!(e.contains("--freeze \"down.0.block.*\" matches no parameter"), "{e}");
        assert!(e.contains("down.0.blocks.*"), "{e}");
        let e = trainable_mask(&NAMES, &[], &["[".into()]).unwrap_err().to_string();
        assert!(e.contains("not a glob pattern"), "{e}");
    }

    #[test]
    fn the_last_lr_scale_wins() {
        let specs: Vec<LrScale> = ["*=0.5", "down.*=2", "*conv1*=3"].iter().map(|s| s.parse().unwrap()).collect();
        assert_eq!(lr_scales(&NAMES, &specs).unwrap(), [0.5, 3.0, 2.0, 0.5, 0.5, 0.5]);
        assert!("down.*".parse::<LrScale>().is_err());
        assert!("down.*=x".parse::<LrScale>().is_err());
        assert!("down.*=-1".parse::<LrScale>().is_err());
    }

    #[test]
    fn groups_count_what_they_match() {
        let params: Vec<(&str, usize)> = NAMES.iter().map(|n| (*n, 10)).collect();
        let g = groups(&params);
        let find = |p: &str| g.iter().find(|g| g.pattern == p).map(|g| g.tensors);
        assert_eq!(find("*attn*"), Some(2));
        assert_eq!(find("down.0.blocks.0.*"), Some(2));
        assert_eq!(find("up.1.*"), Some(1));
        assert_eq!(find("*.lora_*"), None);
    }
}
