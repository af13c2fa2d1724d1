//! Plate-format prior: where a unit knows its region's plate formats, a read that fits none of
//! them is re-ranked towards one it fits by swapping look-alike characters (O/0, I/1, B/8, ...).
//!
//! OCR models confuse look-alikes most (O and 0 are the same glyph on many plates); a format
//! says which class a position holds. The prior is conservative: a read that fits a format is
//! left alone, only look-alike pairs are swapped, the swap must be the OCR's own best choice of
//! the other class for that slot, and a tie between formats changes nothing.

use super::ocr::decode_slots;
use super::PlateText;

/// The class of one position of a format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Letter,
    Digit,
    Any,
    /// A letter or a digit but not the letter O: US standard series do not issue it (see [`us`]).
    NotO,
}

impl Class {
    fn admits(self, c: char) -> bool {
        match self {
            Class::Letter => c.is_ascii_alphabetic(),
            Class::Digit => c.is_ascii_digit(),
            Class::Any => true,
            Class::NotO => c.is_ascii_alphanumeric() && c != 'O',
        }
    }
}

/// The longest format (a pattern of `recognition.plate_formats`, and the `us` preset's).
const MAX_LEN: usize = 12;

/// Characters plates print alike, letter first.
const LOOK_ALIKES: [(char, char); 8] = [
    ('O', '0'),
    ('D', '0'),
    ('Q', '0'),
    ('I', '1'),
    ('B', '8'),
    ('S', '5'),
    ('Z', '2'),
    ('G', '6'),
];

/// Region presets: the current standard series of each country (and older series still common
/// on the road), letters L, digits N, either A, separators dropped. Special, diplomatic,
/// personalised and most motorcycle series are left out: they fit no preset and are only
/// changed where a look-alike swap makes them fit one. Germany (`de`) is generated: 1-3
/// district letters, 1-2 letters, 1-4 digits ([`german`]); so is the United States (`us`:
/// any letters and digits but the letter O, [`us`]).
const PRESETS: &[(&str, &[&str])] = &[
    // Brazil: the older grey plates LLL-NNNN and Mercosur (since 2018) LLLNLNN
    ("br", &["LLLNNNN", "LLLNLNN"]),
    // Belgium: 1-ABC-123 (since 2010), ABC-123 (1973-2010)
    ("be", &["NLLLNNN", "LLLNNN"]),
    ("bg", &["LLNNNNLL", "LNNNNLL"]),
    // Czechia: 1A2 3456 (third character a letter or a digit)
    ("cz", &["NLANNNN"]),
    ("de", &[]),
    ("dk", &["LLNNNNN"]),
    // Spain: 1234 BCD (since 2000), provincial series before it
    (
        "es",
        &["NNNNLLL", "LNNNNLL", "LLNNNNLL", "LNNNNL", "LLNNNNL"],
    ),
    ("fi", &["LLLNNN", "LLLNN", "LLNNN"]),
    // France: AB-123-CD (SIV, since 2009), 123 ABC 45 / 1234 AB 45 (FNI, before it)
    ("fr", &["LLNNNLL", "NNNLLLNN", "NNNNLLNN", "NNNLLNN"]),
    ("gb", &["LLNNLLL"]),
    ("hr", &["LLNNNLL", "LLNNNNLL", "LLNNNL", "LLNNNNL"]),
    ("hu", &["LLLNNN", "LLLLNNN"]),
    ("it", &["LLNNNLL"]),
    ("lt", &["LLLNNN"]),
    // the Netherlands: the sidecodes 1-14 (6 characters in 3 groups)
    (
        "nl",
        &[
            "LLNNNN", "NNNNLL", "NNLLNN", "LLNNLL", "LLLLNN", "NNLLLL", "NNLLLN", "NLLLNN",
            "LLNNNL", "LNNNLL", "LLLNNL", "LNNLLL", "NLLNNN", "NNNLLN",
        ],
    ),
    // Poland: 2-letter district + NNNNN, NNNNL, NNNLL, NLNNN, NLLNN; 3-letter + LNNN, NNLL,
    // NLNN, NNLN, NLLN, LLNN, NNNN, NNNNN, NNNNL, NNNLL
    (
        "pl",
        &[
            "LLNNNNN", "LLNNNNL", "LLNNNLL", "LLNLNNN", "LLNLLNN", "LLLLNNN", "LLLNNLL", "LLLNLNN",
            "LLLNNLN", "LLLNLLN", "LLLLLNN", "LLLNNNN", "LLLNNNNN", "LLLNNNNL", "LLLNNNLL",
        ],
    ),
    ("pt", &["LLNNLL", "NNLLNN", "LLNNNN", "NNNNLL"]),
    // Romania: county + 2 digits + 3 letters; Bucharest B + 2-3 digits + 3 letters
    ("ro", &["LLNNLLL", "LNNLLL", "LNNNLLL"]),
    ("se", &["LLLNNN", "LLLNNL"]),
    ("sk", &["LLNNNLL"]),
    ("us", &[]),
];

/// The countries whose union is the `eu` preset (`gb` and `br` are not in it).
const EU_COUNTRIES: &[&str] = &[
    "be", "bg", "cz", "de", "dk", "es", "fi", "fr", "hr", "hu", "it", "lt", "nl", "pl", "pt", "ro",
    "se", "sk",
];

/// The formats of a preset name (case-insensitive), `None` when there is no such preset.
fn preset(name: &str) -> Option<Vec<Vec<Class>>> {
    let name = name.to_ascii_lowercase();
    if name == "eu" {
        let mut all: Vec<Vec<Class>> = Vec::new();
        for f in EU_COUNTRIES.iter().filter_map(|c| preset(c)).flatten() {
            if !all.contains(&f) {
                all.push(f);
            }
        }
        return Some(all);
    }
    let (_, patterns) = PRESETS.iter().find(|(n, _)| *n == name)?;
    let mut formats: Vec<Vec<Class>> = patterns.iter().filter_map(|p| pattern(p)).collect();
    if name == "de" {
        formats.extend(german());
    }
    if name == "us" {
        formats.extend(us());
    }
    Some(formats)
}

/// The preset names `recognition.plate_formats` accepts.
pub fn preset_names() -> Vec<&'static str> {
    std::iter::once("eu")
        .chain(PRESETS.iter().map(|(n, _)| *n))
        .collect()
}

/// A set of plate formats, from `recognition.plate_formats`.
#[derive(Debug, Clone, Default)]
pub struct FormatPrior {
    formats: Vec<Vec<Class>>,
}

impl FormatPrior {
    /// Entries are preset names ([`preset_names`]; a name wins over a pattern spelt the same,
    /// e.g. `nl`) or patterns of `L` (letter), `N` (digit) and `A` (either). Returns the first
    /// entry that is neither.
    pub fn parse(entries: &[String]) -> Result<FormatPrior, String> {
        let mut formats = Vec::new();
        for e in entries {
            let more = match preset(e) {
                Some(p) => p,
                None => vec![pattern(e).ok_or_else(|| e.clone())?],
            };
            for f in more {
                if !formats.contains(&f) {
                    formats.push(f);
                }
            }
        }
        Ok(FormatPrior { formats })
    }

    /// Re-ranks `t` towards the formats (see the module comment); returns whether it changed.
    pub fn apply(&self, t: &mut PlateText) -> bool {
        if self.formats.is_empty() {
            return false;
        }
        let chars: Vec<char> = t.text.chars().collect();
        let same_len = || self.formats.iter().filter(|f| f.len() == chars.len());
        if same_len().any(|f| f.iter().zip(&chars).all(|(cl, &c)| cl.admits(c))) {
            return false;
        }
        // the slot behind each character (padding slots hold no character)
        let slots: Vec<usize> = t
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                super::ocr::argmax(s).and_then(|(i, _)| t.alphabet.get(i).copied()) != Some(t.pad)
            })
            .map(|(i, _)| i)
            .collect();
        if slots.len() != chars.len() {
            return false;
        }
        // per format: the swaps that make the read fit it, scored by the OCR's log-probabilities
        let mut best: Option<(f32, Vec<(usize, char)>)> = None;
        let mut tie = false;
        for f in same_len() {
            let Some((score, swaps)) = swaps_for(f, &chars, &slots, t) else {
                continue;
            };
            match &best {
                Some((b, s)) if (score - b).abs() < 1e-6 && *s != swaps => tie = true,
                Some((b, _)) if score <= *b => {}
                _ => {
                    best = Some((score, swaps));
                    tie = false;
                }
            }
        }
        let Some((_, swaps)) = best.filter(|_| !tie) else {
            return false;
        };
        // (slot, index of the read character, index of its replacement) for every swap
        let Some(exchanges) = swaps
            .iter()
            .map(|&(k, to)| Some((slots[k], index(t, chars[k])?, index(t, to)?)))
            .collect::<Option<Vec<_>>>()
        else {
            return false;
        };
        let mut slot_probs = std::mem::take(&mut t.slots);
        for (slot, a, b) in exchanges {
            slot_probs[slot].swap(a, b);
        }
        *t = decode_slots(slot_probs, t.alphabet.clone(), t.pad);
        true
    }
}

/// The look-alike swaps that make `chars` fit `f`, each the slot's most probable character of
/// the class the format wants; `None` when some position cannot be fitted that way.
fn swaps_for(
    f: &[Class],
    chars: &[char],
    slots: &[usize],
    t: &PlateText,
) -> Option<(f32, Vec<(usize, char)>)> {
    let mut score = 0.0;
    let mut swaps = Vec::new();
    for (k, (&cl, &c)) in f.iter().zip(chars).enumerate() {
        if cl.admits(c) {
            continue;
        }
        let probs = &t.slots[slots[k]];
        let (alt, p) = t
            .alphabet
            .iter()
            .zip(probs)
            .filter(|(&a, _)| a != t.pad && cl.admits(a))
            .max_by(|a, b| a.1.total_cmp(b.1))?;
        if !look_alike(c, *alt) {
            return None;
        }
        score += p.max(1e-9).ln();
        swaps.push((k, *alt));
    }
    Some((score, swaps))
}

fn index(t: &PlateText, c: char) -> Option<usize> {
    t.alphabet.iter().position(|&a| a == c)
}

fn look_alike(a: char, b: char) -> bool {
    LOOK_ALIKES
        .iter()
        .any(|&(l, d)| (a, b) == (l, d) || (a, b) == (d, l))
}

fn pattern(p: &str) -> Option<Vec<Class>> {
    if p.is_empty() || p.len() > MAX_LEN {
        return None;
    }
    p.chars()
        .map(|c| match c.to_ascii_uppercase() {
            'L' => Some(Class::Letter),
            'N' => Some(Class::Digit),
            'A' => Some(Class::Any),
            _ => None,
        })
        .collect()
}

/// Germany: 1-3 district letters, 1-2 letters, 1-4 digits.
fn german() -> Vec<Vec<Class>> {
    (2..=5)
        .flat_map(|letters| {
            (1..=4).map(move |digits| {
                let mut f = vec![Class::Letter; letters];
                f.extend(std::iter::repeat_n(Class::Digit, digits));
                f
            })
        })
        .collect()
}

/// The United States: state series are too varied for a format, but many standard series leave
/// out the letter O (Maryland, Pennsylvania, Virginia, Michigan, Mississippi; California prints it
/// only as the middle letter) and many states print 0 and O with one glyph. So any read without
/// an O fits, and an O becomes 0 where 0 is the OCR's own next choice for that slot. Vanity plates
/// and the few series with an O are then read with a 0: the price of the preset, measured in
/// models/README.md.
fn us() -> Vec<Vec<Class>> {
    (1..=MAX_LEN).map(|n| vec![Class::NotO; n]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const ALPHABET: &str = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_";

    /// A read of `text` (9 slots) with 0.7 on each character and `alt` holding 0.25 where given.
    fn read(text: &str, alts: &[(usize, char)]) -> PlateText {
        let alphabet: Arc<[char]> = ALPHABET.chars().collect();
        let padded: Vec<char> = text.chars().chain(std::iter::repeat('_')).take(9).collect();
        let slots = padded
            .iter()
            .enumerate()
            .map(|(k, &c)| {
                let mut v = vec![0.05 / 35.0; alphabet.len()];
                let i = alphabet.iter().position(|&a| a == c).unwrap_or(0);
                v[i] = if c == '_' { 0.95 } else { 0.7 };
                if let Some(&(_, a)) = alts.iter().find(|(j, _)| *j == k) {
                    v[alphabet.iter().position(|&x| x == a).unwrap_or(0)] = 0.25;
                }
                v
            })
            .collect();
        decode_slots(slots, alphabet, '_')
    }

    fn eu() -> FormatPrior {
        FormatPrior::parse(&["eu".into()]).unwrap_or_default()
    }

    #[test]
    fn a_letter_i_among_digits_becomes_one() {
        let mut t = read("RK8I6AB", &[(3, '1')]);
        assert!(eu().apply(&mut t));
        assert_eq!(t.text, "RK816AB");
        assert!(
            (t.chars[3].p - 0.7).abs() < 1e-6,
            "the swap keeps the slot's probability"
        );
    }

    #[test]
    fn a_zero_in_a_letter_position_becomes_the_ocrs_best_letter() {
        let mut t = read("BB135B0", &[(6, 'O')]);
        assert!(eu().apply(&mut t));
        assert_eq!(t.text, "BB135BO");
    }

    #[test]
    fn reads_that_fit_or_cannot_fit_by_look_alikes_are_left_alone() {
        let prior = eu();
        for text in ["RK260AR", "4BO4979", "M4572AY", "XY12"] {
            let mut t = read(text, &[]);
            let before = t.text.clone();
            prior.apply(&mut t);
            assert_eq!(t.text, before);
        }
        // fits no format; the OCR's best digit for the K in position 3 is no look-alike of it
        let mut t = read("RK2KKAR", &[(3, '7')]);
        assert!(!prior.apply(&mut t));
        assert_eq!(t.text, "RK2KKAR");
    }

    /// Per preset: a read with one look-alike wrong becomes the plate, a plate that fits stays.
    #[test]
    fn each_preset_fixes_its_look_alikes_and_keeps_its_plates() {
        let cases: &[(&str, &str, usize, char, &str)] = &[
            // (preset, misread, slot, the OCR's second choice there, expected)
            ("br", "A8C1234", 1, 'B', "ABC1234"),
            ("br", "8RA2E19", 0, 'B', "BRA2E19"),
            ("br", "RI02345", 2, 'O', "RIO2345"),
            ("be", "IABC123", 0, '1', "1ABC123"),
            ("bg", "CA1234A8", 7, 'B', "CA1234AB"),
            ("cz", "IB80338", 0, '1', "1B80338"),
            ("de", "K0B123", 1, 'O', "KOB123"),
            ("dk", "A812345", 1, 'B', "AB12345"),
            ("es", "I234BCD", 0, '1', "1234BCD"),
            ("fi", "A8C123", 1, 'B', "ABC123"),
            ("fr", "AB12SCD", 4, '5', "AB125CD"),
            ("gb", "A812CDE", 1, 'B', "AB12CDE"),
            ("hr", "ZG12S4AB", 4, '5', "ZG1254AB"),
            ("hu", "A8C123", 1, 'B', "ABC123"),
            ("it", "FA8I2CD", 3, '1', "FA812CD"),
            ("lt", "A8C123", 1, 'B', "ABC123"),
            ("nl", "I2ABC3", 0, '1', "12ABC3"),
            ("pl", "8S47040", 0, 'B', "BS47040"),
            ("pt", "AA0OAA", 3, '0', "AA00AA"),
            ("ro", "CJI2ABC", 2, '1', "CJ12ABC"),
            ("se", "A8C123", 1, 'B', "ABC123"),
            ("sk", "RK8I6AB", 3, '1', "RK816AB"),
            ("us", "HB6LOZ", 4, '0', "HB6L0Z"),
        ];
        for &(name, misread, slot, alt, want) in cases {
            let prior = FormatPrior::parse(&[name.into()]).expect("a preset");
            let mut t = read(misread, &[(slot, alt)]);
            assert!(prior.apply(&mut t), "{name}: {misread} left alone");
            assert_eq!(t.text, want, "{name}");
            let mut t = read(want, &[]);
            assert!(!prior.apply(&mut t), "{name}: {want} fits and stays");
        }
        assert_eq!(
            preset_names().len(),
            cases
                .iter()
                .map(|c| c.0)
                .collect::<std::collections::BTreeSet<_>>()
                .len()
                + 1,
            "a case for every preset but eu"
        );
    }

    #[test]
    fn us_reads_an_o_as_zero_only_where_zero_is_the_ocrs_next_choice() {
        let us = FormatPrior::parse(&["us".into()]).expect("us");
        let mut t = read("AC0M7V", &[]);
        assert!(!us.apply(&mut t), "a read without an O fits");
        // a vanity plate whose O the OCR would otherwise read as a D: left alone
        let mut t = read("YOSPEED", &[(1, 'D')]);
        assert!(!us.apply(&mut t));
        assert_eq!(t.text, "YOSPEED");
        // I and Q are issued by some states: untouched
        let mut t = read("GIQ157", &[(1, '1'), (2, '0')]);
        assert!(!us.apply(&mut t));
        assert_eq!(t.text, "GIQ157");
        let mut t = read("SHOR7X", &[(2, '0')]);
        assert!(us.apply(&mut t));
        assert_eq!(t.text, "SH0R7X");
    }

    #[test]
    fn eu_is_the_union_of_the_eu_countries() {
        let eu = FormatPrior::parse(&["EU".into()]).expect("eu");
        for c in EU_COUNTRIES {
            let country = FormatPrior::parse(&[(*c).into()]).expect("a preset");
            assert!(!country.formats.is_empty(), "{c}");
            for f in &country.formats {
                assert!(eu.formats.contains(f), "{c}: {f:?} not in eu");
            }
        }
        let br = FormatPrior::parse(&["br".into()]).expect("br");
        assert_eq!(br.formats.len(), 2, "Brazil is no part of eu");
    }

    #[test]
    fn custom_patterns_and_bad_entries() {
        let prior = FormatPrior::parse(&["LLLNNNN".into()]).unwrap_or_default();
        let mut t = read("ABC12O4", &[(5, '0')]);
        assert!(prior.apply(&mut t));
        assert_eq!(t.text, "ABC1204");
        assert_eq!(
            FormatPrior::parse(&["LL-NNN".into()]).err(),
            Some("LL-NNN".into())
        );
        let mut t = read("RK26OAR", &[(4, '0')]);
        assert!(
            !FormatPrior::default().apply(&mut t),
            "no formats, no prior"
        );
    }
}
