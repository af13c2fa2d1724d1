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
}

impl Class {
    fn admits(self, c: char) -> bool {
        match self {
            Class::Letter => c.is_ascii_alphabetic(),
            Class::Digit => c.is_ascii_digit(),
            Class::Any => true,
        }
    }
}

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

/// Common formats of EU countries (letters L, digits N, either A), without separators:
/// FR/IT/SK/HR `LLNNNLL`, ES `NNNNLLL`, CZ `NLANNNN`, PL/DK `LLNNNNN`, PL `LLLNNNN`,
/// BE `NLLLNNN`, RO `LLNNLLL` and `LNNLLL`, SE/FI/HU/LT `LLLNNN`, SE `LLLNNL`, BG/HR
/// `LLNNNNLL`, HU `LLLLNNN`; and Germany's district letters then digits (2-5 letters, 1-4
/// digits). Formats overlap (a Romanian `LLNNLLL` read is left alone where a Slovak plate meant
/// `LLNNNLL`): a unit that knows its country does better listing that country's patterns.
const EU: &[&str] = &[
    "LLNNNLL", "NNNNLLL", "NLANNNN", "LLNNNNN", "LLLNNNN", "NLLLNNN", "LLNNLLL", "LNNLLL",
    "LLLNNN", "LLLNNL", "LLNNNNLL", "LLLLNNN",
];

/// A set of plate formats, from `recognition.plate_formats`.
#[derive(Debug, Clone, Default)]
pub struct FormatPrior {
    formats: Vec<Vec<Class>>,
}

impl FormatPrior {
    /// Entries are preset names (`eu`) or patterns of `L` (letter), `N` (digit) and `A` (either).
    /// Returns the first entry that is neither.
    pub fn parse(entries: &[String]) -> Result<FormatPrior, String> {
        let mut formats = Vec::new();
        for e in entries {
            if e.eq_ignore_ascii_case("eu") {
                formats.extend(EU.iter().map(|p| pattern(p).unwrap_or_default()));
                formats.extend(german());
            } else {
                formats.push(pattern(e).ok_or_else(|| e.clone())?);
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
    if p.is_empty() || p.len() > 12 {
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
