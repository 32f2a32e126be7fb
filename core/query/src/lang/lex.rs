//! Tokens of the query language, with their byte position for error messages.
//!
//! Follows LogScale's tokenisation where the subset needs it: a `/` that starts a token
//! starts a regex literal (`/fisk/i`), `//` and `/* */` are comments, `[` and `]` inside a
//! word belong to it (`a[0]`). Inside an expression (after `:=` up to the end of its step,
//! and inside `eval(...)`, `test(...)` and `if(...)`) `+ - * /` are operators, so
//! `x := a / b` divides instead of starting a regex.

use super::ParseError;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    /// An unquoted run of characters: a field name, a value, free text or a keyword.
    Word(String),
    /// A `"quoted string"`, escapes resolved.
    Str(String),
    /// `/pattern/flags`.
    Regex {
        pattern: String,
        flags: String,
    },
    Pipe,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Eq,
    Ne,
    Bang,
    Lt,
    Le,
    Gt,
    Ge,
    /// `==` (an expression's equality).
    EqEq,
    /// `:=` (field assignment).
    Assign,
    /// `+ - * /` inside an expression.
    Op(char),
    /// A query parameter, `?name` or `?{name=default}`; replaced by its value before
    /// parsing.
    Param {
        name: String,
        default: Option<String>,
    },
    /// Anything the subset has no use for (`:=`, `==`, `{`, `;`, ...), kept to name it.
    Other(String),
}

impl Tok {
    pub(crate) fn describe(&self) -> String {
        match self {
            Tok::Word(w) => format!("`{w}`"),
            Tok::Str(s) => format!("\"{s}\""),
            Tok::Regex { pattern, flags } => format!("/{pattern}/{flags}"),
            Tok::Pipe => "`|`".into(),
            Tok::LParen => "`(`".into(),
            Tok::RParen => "`)`".into(),
            Tok::LBracket => "`[`".into(),
            Tok::RBracket => "`]`".into(),
            Tok::Comma => "`,`".into(),
            Tok::Eq => "`=`".into(),
            Tok::Ne => "`!=`".into(),
            Tok::Bang => "`!`".into(),
            Tok::Lt => "`<`".into(),
            Tok::Le => "`<=`".into(),
            Tok::Gt => "`>`".into(),
            Tok::Ge => "`>=`".into(),
            Tok::EqEq => "`==`".into(),
            Tok::Assign => "`:=`".into(),
            Tok::Op(c) => format!("`{c}`"),
            Tok::Param { name, .. } => format!("`?{name}`"),
            Tok::Other(s) => format!("`{s}`"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub tok: Tok,
    /// Byte offset in the query string.
    pub pos: usize,
    /// Whether whitespace (or a comment) precedes it: `count()` is a call, `count ()` is
    /// free text followed by a group.
    pub space_before: bool,
}

/// Characters that end an unquoted word (and, in an expression, its operators).
fn ends_word(c: char, in_expr: bool) -> bool {
    c.is_whitespace() || matches!(c, '|' | '(' | ')' | ',' | '=' | '!' | '"' | '<' | '>' | '{' | '}' | ';') || (in_expr && matches!(c, '+' | '-' | '*' | '/'))
}

/// Where an expression (operators instead of regexes and wildcards) ends.
#[derive(Debug, Clone, Copy, PartialEq)]
enum ExprScope {
    /// Inside `eval(`, `test(` or `if(`: ends at the `)` that brings the depth back.
    Call { depth: usize },
    /// After `:=`: ends at `|`, `;` or `}` at this depth.
    Assign { depth: usize },
}

/// Functions whose arguments are expressions.
const EXPR_CALLS: [&str; 3] = ["eval", "test", "if"];

pub(crate) fn tokenize(input: &str) -> Result<Vec<Token>, ParseError> {
    let chars: Vec<(usize, char)> = input.char_indices().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    let mut space_before = false;
    let mut depth = 0usize;
    let mut scopes: Vec<ExprScope> = Vec::new();
    while i < chars.len() {
        let (pos, c) = chars[i];
        let next = chars.get(i + 1).map(|&(_, c)| c);
        if c.is_whitespace() {
            space_before = true;
            i += 1;
            continue;
        }
        match c {
            '(' => {
                let call =
                    matches!(tokens.last(), Some(Token { tok: Tok::Word(w), .. }) if EXPR_CALLS.iter().any(|f| w.eq_ignore_ascii_case(f))) && !space_before;
                if call {
                    scopes.push(ExprScope::Call { depth });
                }
                depth += 1;
            }
            ')' => {
                depth = depth.saturating_sub(1);
                while matches!(scopes.last(), Some(ExprScope::Call { depth: d }) if *d == depth) {
                    scopes.pop();
                }
            }
            '|' | ';' | '}' => {
                while matches!(scopes.last(), Some(ExprScope::Assign { depth: d }) if *d == depth) {
                    scopes.pop();
                }
            }
            _ => {}
        }
        let in_expr = !scopes.is_empty();
        let mut push = |tok: Tok, len: usize, i: &mut usize, space: &mut bool| {
            tokens.push(Token { tok, pos, space_before: *space });
            *space = false;
            *i += len;
        };
        match c {
            '/' if next == Some('/') => {
                while i < chars.len() && chars[i].1 != '\n' {
                    i += 1;
                }
                space_before = true;
            }
            '/' if next == Some('*') => {
                let start = pos;
                i += 2;
                loop {
                    if i + 1 >= chars.len() {
                        return Err(ParseError::at(start, "a /* comment is not closed with */"));
                    }
                    if chars[i].1 == '*' && chars[i + 1].1 == '/' {
                        i += 2;
                        break;
                    }
                    i += 1;
                }
                space_before = true;
            }
            '/' | '+' | '-' | '*' if in_expr => push(Tok::Op(c), 1, &mut i, &mut space_before),
            '/' => {
                let mut pattern = String::new();
                let mut j = i + 1;
                loop {
                    let Some(&(_, d)) = chars.get(j) else {
                        return Err(ParseError::at(pos, "a /regex/ is not closed with /"));
                    };
                    if d == '\\' && chars.get(j + 1).map(|&(_, e)| e) == Some('/') {
                        pattern.push('/');
                        j += 2;
                    } else if d == '\\' {
                        pattern.push('\\');
                        if let Some(&(_, e)) = chars.get(j + 1) {
                            pattern.push(e);
                        }
                        j += 2;
                    } else if d == '/' {
                        j += 1;
                        break;
                    } else {
                        pattern.push(d);
                        j += 1;
                    }
                }
                let mut flags = String::new();
                while let Some(&(_, f)) = chars.get(j) {
                    if !f.is_ascii_alphabetic() {
                        break;
                    }
                    flags.push(f);
                    j += 1;
                }
                let len = j - i;
                push(Tok::Regex { pattern, flags }, len, &mut i, &mut space_before);
            }
            '"' => {
                let mut text = String::new();
                let mut j = i + 1;
                loop {
                    let Some(&(_, d)) = chars.get(j) else {
                        return Err(ParseError::at(pos, "a quoted string is not closed with \""));
                    };
                    match d {
                        '"' => {
                            j += 1;
                            break;
                        }
                        '\\' => {
                            match chars.get(j + 1).map(|&(_, e)| e) {
                                Some('"') => text.push('"'),
                                Some('\\') => text.push('\\'),
                                Some('n') => text.push('\n'),
                                Some('t') => text.push('\t'),
                                Some(e) => {
                                    text.push('\\');
                                    text.push(e);
                                }
                                None => {
                                    return Err(ParseError::at(pos, "a quoted string is not closed with \""));
                                }
                            }
                            j += 2;
                        }
                        _ => {
                            text.push(d);
                            j += 1;
                        }
                    }
                }
                let len = j - i;
                push(Tok::Str(text), len, &mut i, &mut space_before);
            }
            '|' => push(Tok::Pipe, 1, &mut i, &mut space_before),
            '(' => push(Tok::LParen, 1, &mut i, &mut space_before),
            ')' => push(Tok::RParen, 1, &mut i, &mut space_before),
            '[' => push(Tok::LBracket, 1, &mut i, &mut space_before),
            ']' => push(Tok::RBracket, 1, &mut i, &mut space_before),
            ',' => push(Tok::Comma, 1, &mut i, &mut space_before),
            '=' if next == Some('=') => push(Tok::EqEq, 2, &mut i, &mut space_before),
            '=' if next == Some('>') => push(Tok::Other("=>".into()), 2, &mut i, &mut space_before),
            '=' => push(Tok::Eq, 1, &mut i, &mut space_before),
            '!' if next == Some('=') => push(Tok::Ne, 2, &mut i, &mut space_before),
            '!' => push(Tok::Bang, 1, &mut i, &mut space_before),
            '<' if next == Some('=') => push(Tok::Le, 2, &mut i, &mut space_before),
            // LogScale also spells `!=` as `<>`.
            '<' if next == Some('>') => push(Tok::Ne, 2, &mut i, &mut space_before),
            '<' => push(Tok::Lt, 1, &mut i, &mut space_before),
            '>' if next == Some('=') => push(Tok::Ge, 2, &mut i, &mut space_before),
            '>' => push(Tok::Gt, 1, &mut i, &mut space_before),
            '?' if next == Some('{') => {
                let Some(close) = chars[i..].iter().position(|&(_, d)| d == '}') else {
                    return Err(ParseError::at(pos, "a parameter with a default is written ?{name=default}, closed with }"));
                };
                let inner: String = chars[i + 2..i + close].iter().map(|&(_, d)| d).collect();
                let Some((name, default)) = inner.split_once('=') else {
                    return Err(ParseError::at(pos, "a parameter with a default is written ?{name=default}"));
                };
                let default = default.trim();
                let default = default.strip_prefix('"').and_then(|d| d.strip_suffix('"')).unwrap_or(default);
                let tok = Tok::Param { name: name.trim().to_owned(), default: Some(default.to_owned()) };
                push(tok, close + 1, &mut i, &mut space_before);
            }
            '{' | '}' | ';' => push(Tok::Other(c.to_string()), 1, &mut i, &mut space_before),
            ':' if next == Some('=') => {
                scopes.push(ExprScope::Assign { depth });
                push(Tok::Assign, 2, &mut i, &mut space_before);
            }
            _ => {
                let mut word = String::new();
                let mut j = i;
                let mut open_brackets = 0usize;
                while let Some(&(_, d)) = chars.get(j) {
                    if ends_word(d, in_expr) || (d == ']' && open_brackets == 0) {
                        break;
                    }
                    if d == ':' && chars.get(j + 1).map(|&(_, e)| e) == Some('=') {
                        break;
                    }
                    match d {
                        '[' => open_brackets += 1,
                        ']' => open_brackets -= 1,
                        _ => {}
                    }
                    word.push(d);
                    j += 1;
                }
                let len = j - i;
                let tok = match word.strip_prefix('?') {
                    Some(name) if !name.is_empty() => Tok::Param { name: name.to_owned(), default: None },
                    _ => Tok::Word(word),
                };
                push(tok, len, &mut i, &mut space_before);
            }
        }
    }
    Ok(tokens)
}
