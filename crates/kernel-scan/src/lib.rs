//! The one scanner of `kernels/*.cu`. Both build scripts that need to know
//! the kernels use it: `diffuse-tensor`'s (typed launch handles, one per
//! kernel, with the kinds of its parameters) and `diffuse-emu`'s (the
//! emulator's entry points and shared-memory aliases). It is a tokenizer, not
//! a C++ parser: enough for plain CUDA C signatures, and the emulator's
//! build cross-checks every scanned signature against the compiler's view of
//! it (`static_assert` on the parameter count, templates for sizes/kinds).

use std::fmt::Write as _;

/// One `extern "C" __global__ void NAME(PARAMS)` kernel.
#[derive(Debug, Clone, PartialEq)]
pub struct Kernel {
    pub name: String,
    /// The parameter list as written (normalised whitespace).
    pub params: String,
    pub param_names: Vec<String>,
    pub param_kinds: Vec<ParamKind>,
}

/// What a kernel parameter is, as far as argument passing goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamKind {
    /// A pointer (device memory) to anything but bf16.
    Ptr,
    /// A pointer to `__nv_bfloat16` (a bf16 tensor's buffer).
    PtrBf16,
    I32,
    U32,
    I64,
    U64,
    F32,
    F64,
    /// A type the scanner does not classify (a struct passed by value...).
    Other(String),
}

impl ParamKind {
    /// The Rust spelling of this kind as a variant of `ArgKind` in the
    /// generated handles.
    pub fn variant(&self) -> &'static str {
        match self {
            ParamKind::Ptr => "Ptr",
            ParamKind::PtrBf16 => "PtrBf16",
            ParamKind::I32 => "I32",
            ParamKind::U32 => "U32",
            ParamKind::I64 => "I64",
            ParamKind::U64 => "U64",
            ParamKind::F32 => "F32",
            ParamKind::F64 => "F64",
            ParamKind::Other(_) => "Other",
        }
    }
}

/// Everything the build scripts need from one source file.
#[derive(Debug, Clone, Default)]
pub struct ScannedFile {
    pub kernels: Vec<Kernel>,
    /// Names of `extern __shared__` arrays (dynamic shared memory).
    pub extern_shared: Vec<String>,
    /// Whether the file declares static `__shared__` memory.
    pub static_shared: bool,
    /// Kernels that cannot be launched by name, one message each.
    pub warnings: Vec<String>,
}

/// Scans one `.cu` or `.cuh` source text.
pub fn scan_source(text: &str) -> ScannedFile {
    let toks = tokenize(&strip_comments(text));
    let (kernels, warnings) = scan_kernels(&toks);
    ScannedFile { kernels, extern_shared: scan_extern_shared(&toks), static_shared: has_static_shared(&toks), warnings }
}

pub fn strip_comments(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'/' && i + 1 < b.len() && b[i + 1] == b'/' {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i] == b'/' && i + 1 < b.len() && b[i + 1] == b'*' {
            i += 2;
            while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                i += 1;
            }
            i += 2;
            out.push(' ');
        } else if b[i] == b'"' || b[i] == b'\'' {
            let q = b[i];
            let start = i;
            i += 1;
            while i < b.len() && b[i] != q {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str(&s[start..i.min(b.len())]);
        } else if b[i] == b'#' {
            // preprocessor line (with continuations): not declarations
            let at_line_start = out.trim_end_matches([' ', '\t']).ends_with('\n') || out.trim().is_empty();
            if at_line_start {
                while i < b.len() && b[i] != b'\n' {
                    if b[i] == b'\\' && i + 1 < b.len() && b[i + 1] == b'\n' {
                        i += 1;
                    }
                    i += 1;
                }
            } else {
                out.push('#');
                i += 1;
            }
        } else {
            let ch = s[i..].chars().next().unwrap();
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    Ident(String),
    Str(String),
    Punct(char),
}

pub fn tokenize(s: &str) -> Vec<Tok> {
    let c: Vec<char> = s.chars().collect();
    let mut v = Vec::new();
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch.is_whitespace() {
            i += 1;
        } else if ch.is_alphabetic() || ch == '_' {
            let st = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            v.push(Tok::Ident(c[st..i].iter().collect()));
        } else if ch.is_ascii_digit() {
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '.' || c[i] == '_') {
                i += 1;
            }
            v.push(Tok::Punct('0'));
        } else if ch == '"' || ch == '\'' {
            let st = i;
            i += 1;
            while i < c.len() && c[i] != ch {
                if c[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            v.push(Tok::Str(c[st + 1..(i - 1).min(c.len())].iter().collect()));
        } else {
            v.push(Tok::Punct(ch));
            i += 1;
        }
    }
    v
}

pub fn is_ident(t: &Tok, s: &str) -> bool {
    matches!(t, Tok::Ident(x) if x == s)
}

/// Index just past the parenthesised group starting at toks[i] == '('.
pub fn skip_parens(toks: &[Tok], mut i: usize) -> usize {
    let mut depth = 0;
    while i < toks.len() {
        match toks[i] {
            Tok::Punct('(') => depth += 1,
            Tok::Punct(')') => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    i
}

/// The `extern "C" __global__ void` kernels of a token stream, in source
/// order, and one warning for each `__global__` function that cannot be
/// launched by name (templated, not `extern "C"`, or not returning void).
pub fn scan_kernels(toks: &[Tok]) -> (Vec<Kernel>, Vec<String>) {
    let mut out: Vec<Kernel> = Vec::new();
    let mut warnings = Vec::new();
    let mut braces: Vec<bool> = Vec::new(); // true: an extern "C" { block
    let mut decl_start = 0;
    let mut i = 0;
    while i < toks.len() {
        match &toks[i] {
            Tok::Punct('{') => {
                let ext_c = i >= 2 && is_ident(&toks[i - 2], "extern") && toks[i - 1] == Tok::Str("C".into());
                braces.push(ext_c);
                decl_start = i + 1;
            }
            Tok::Punct('}') => {
                braces.pop();
                decl_start = i + 1;
            }
            Tok::Punct(';') => decl_start = i + 1,
            Tok::Ident(x) if x == "__global__" => {
                let decl = &toks[decl_start..i];
                let in_c_block = braces.iter().any(|b| *b);
                let extern_c =
                    in_c_block || decl.windows(2).any(|w| is_ident(&w[0], "extern") && w[1] == Tok::Str("C".into()));
                let templated = decl.iter().any(|t| is_ident(t, "template"));
                // find `NAME (` after the return type, skipping attributes
                let mut j = i + 1;
                let mut name = None;
                let mut ret_void = false;
                while j < toks.len() {
                    match &toks[j] {
                        Tok::Ident(x) if x == "__launch_bounds__" || x == "__attribute__" || x == "__maxnreg__" => {
                            j = skip_parens(toks, j + 1);
                            continue;
                        }
                        Tok::Ident(x) if x == "void" => ret_void = true,
                        Tok::Ident(x) if j + 1 < toks.len() && toks[j + 1] == Tok::Punct('(') => {
                            name = Some((x.clone(), j + 1));
                            break;
                        }
                        Tok::Punct(';') | Tok::Punct('{') => break,
                        _ => {}
                    }
                    j += 1;
                }
                let Some((name, open)) = name else {
                    i += 1;
                    continue;
                };
                let close = skip_parens(toks, open);
                if templated || !extern_c || !ret_void {
                    warnings.push(format!(
                        "kernel `{name}` is not `extern \"C\" __global__ void`: not registered (it cannot be launched by name)"
                    ));
                } else if !out.iter().any(|k| k.name == name) {
                    let inner = &toks[open + 1..close - 1];
                    out.push(Kernel {
                        params: render(inner),
                        param_names: param_names(inner),
                        param_kinds: param_kinds(inner),
                        name,
                    });
                }
                i = close;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    (out, warnings)
}

fn render(toks: &[Tok]) -> String {
    let mut s = String::new();
    for t in toks {
        match t {
            Tok::Ident(x) => {
                if s.ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == '*' || c == '&') {
                    s.push(' ');
                }
                s.push_str(x);
            }
            Tok::Str(x) => {
                let _ = write!(s, "\"{x}\"");
            }
            Tok::Punct(',') => s.push_str(", "),
            Tok::Punct(c) => s.push(*c),
        }
    }
    s
}

fn param_names(toks: &[Tok]) -> Vec<String> {
    let mut names = Vec::new();
    let mut depth = 0;
    let mut cur: Vec<&Tok> = Vec::new();
    let mut flush = |cur: &mut Vec<&Tok>| {
        let is_void = cur.len() == 1 && is_ident(cur[0], "void");
        if !cur.is_empty() && !is_void {
            let name = cur.iter().rev().find_map(|t| match t {
                Tok::Ident(x) if !matches!(x.as_str(), "__restrict__" | "const" | "volatile") => Some(x.clone()),
                _ => None,
            });
            names.push(name.unwrap_or_else(|| format!("arg{}", names.len())));
        }
        cur.clear();
    };
    for t in toks {
        match t {
            Tok::Punct('(') | Tok::Punct('<') | Tok::Punct('[') => depth += 1,
            Tok::Punct(')') | Tok::Punct('>') | Tok::Punct(']') => depth -= 1,
            Tok::Punct(',') if depth == 0 => {
                flush(&mut cur);
                continue;
            }
            _ => {}
        }
        if depth == 0 {
            cur.push(t);
        }
    }
    flush(&mut cur);
    names
}

/// Any `__shared__` not right after `extern`.
pub fn has_static_shared(toks: &[Tok]) -> bool {
    toks.iter().enumerate().any(|(i, t)| is_ident(t, "__shared__") && !(i > 0 && is_ident(&toks[i - 1], "extern")))
}

pub fn scan_extern_shared(toks: &[Tok]) -> Vec<String> {
    let mut v = Vec::new();
    for i in 0..toks.len().saturating_sub(1) {
        if is_ident(&toks[i], "extern") && is_ident(&toks[i + 1], "__shared__") {
            let mut last = None;
            let mut j = i + 2;
            while j < toks.len() {
                match &toks[j] {
                    Tok::Punct('[') | Tok::Punct(';') => break,
                    Tok::Punct('(') => {
                        j = skip_parens(toks, j);
                        continue;
                    }
                    Tok::Ident(x) => last = Some(x.clone()),
                    _ => {}
                }
                j += 1;
            }
            if let Some(n) = last {
                v.push(n);
            }
        }
    }
    v
}

/// The kind of each parameter of a parameter list (tokens inside the
/// parentheses).
fn param_kinds(toks: &[Tok]) -> Vec<ParamKind> {
    split_params(toks).iter().map(|p| kind_of(p)).collect()
}

/// The parameters of a list, split at top-level commas (`void` alone is no
/// parameter).
fn split_params(toks: &[Tok]) -> Vec<Vec<&Tok>> {
    let mut params = Vec::new();
    let mut depth = 0;
    let mut cur: Vec<&Tok> = Vec::new();
    for t in toks {
        match t {
            Tok::Punct('(') | Tok::Punct('<') | Tok::Punct('[') => depth += 1,
            Tok::Punct(')') | Tok::Punct('>') | Tok::Punct(']') => depth -= 1,
            Tok::Punct(',') if depth == 0 => {
                params.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(t);
    }
    if !(cur.is_empty() || cur.len() == 1 && is_ident(cur[0], "void")) {
        params.push(cur);
    }
    params
}

fn kind_of(param: &[&Tok]) -> ParamKind {
    if param.iter().any(|t| matches!(t, Tok::Punct('*') | Tok::Punct('['))) {
        let bf16 = param.iter().any(|t| is_ident(t, "__nv_bfloat16"));
        return if bf16 { ParamKind::PtrBf16 } else { ParamKind::Ptr };
    }
    let words: Vec<&str> = param
        .iter()
        .filter_map(|t| match t {
            Tok::Ident(x) if !matches!(x.as_str(), "const" | "volatile" | "__restrict__" | "signed") => {
                Some(x.as_str())
            }
            _ => None,
        })
        .collect();
    // the last word is the parameter's name when there is more than one
    let ty = if words.len() > 1 { &words[..words.len() - 1] } else { &words[..] };
    match ty.join(" ").as_str() {
        "int" | "int32_t" => ParamKind::I32,
        "unsigned" | "unsigned int" | "uint32_t" => ParamKind::U32,
        "long long" | "long long int" | "int64_t" | "long" => ParamKind::I64,
        "unsigned long long" | "unsigned long long int" | "uint64_t" | "size_t" | "unsigned long" => ParamKind::U64,
        "float" => ParamKind::F32,
        "double" => ParamKind::F64,
        other => ParamKind::Other(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_names_parameters_and_kinds() {
        let src = r#"
            // a comment with __global__ void fake(int x)
            #include "common.cuh"
            extern "C" __global__ void __launch_bounds__(256) k_one(float* __restrict__ y, const float* x,
                                                                     int n, unsigned int m, unsigned long long big,
                                                                     float s, double d) {
                __shared__ float tile[64];
            }
            __global__ void not_extern(int n) {}
            extern "C" { __global__ void k_two(void) {} }
            extern __shared__ float dyn_smem[];
        "#;
        let f = scan_source(src);
        let names: Vec<&str> = f.kernels.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["k_one", "k_two"]);
        let k = &f.kernels[0];
        assert_eq!(k.param_names, ["y", "x", "n", "m", "big", "s", "d"]);
        use ParamKind::*;
        assert_eq!(k.param_kinds, [Ptr, Ptr, I32, U32, U64, F32, F64]);
        assert!(f.kernels[1].param_kinds.is_empty());
        assert_eq!(f.extern_shared, ["dyn_smem"]);
        assert!(f.static_shared);
        assert_eq!(f.warnings.len(), 1, "{:?}", f.warnings);
        assert!(f.warnings[0].contains("not_extern"));
    }

    #[test]
    fn bf16_pointers_are_their_own_kind() {
        let f = scan_source("extern \"C\" __global__ void k(float* y, const __nv_bfloat16* __restrict__ x, int n) {}");
        assert_eq!(f.kernels[0].param_kinds, [ParamKind::Ptr, ParamKind::PtrBf16, ParamKind::I32]);
    }

    #[test]
    fn unknown_types_are_other() {
        let f = scan_source("extern \"C\" __global__ void k(struct Foo f, half h) {}");
        assert_eq!(f.kernels[0].param_kinds, [ParamKind::Other("struct Foo".into()), ParamKind::Other("half".into())]);
    }
}
