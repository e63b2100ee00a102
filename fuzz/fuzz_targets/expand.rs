//! Shell-word expansion on any input, with every lexer mode: the first byte
//! picks the modes and the escape character, lines of the form NAME=VALUE
//! before a NUL byte set variables, and the rest is the word.
#![no_main]

use std::collections::HashMap;

use kiln_dockerfile::shell::Lexer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&modes, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest);
    let (env_text, word) = text.split_once('\0').unwrap_or(("", &text));
    let env: HashMap<String, String> = env_text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut lexer = Lexer::new(if modes & 1 == 0 { '\\' } else { '`' });
    lexer.raw_quotes = modes & 2 != 0;
    lexer.raw_escapes = modes & 4 != 0;
    lexer.skip_unset_env = modes & 8 != 0;
    lexer.skip_process_quotes = modes & 16 != 0;
    let _ = lexer.expand_word(word, &env);
    let _ = lexer.expand_words(word, &env);
    let _ = lexer.expand_with_matches(word, &env);
});
