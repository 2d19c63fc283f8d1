// SyntheticText: a generated corpus with structure a small model can learn.
//
// For smoke tests and for trying ideas without data (the notes' "synthetic
// fallback"). Random characters would be useless: the best possible loss
// would be ln V and nothing could be learned. This text has three kinds of
// structure, each needing a different part of the model:
//
//   1. Spelling: words come from a fixed lexicon of made-up words, so within
//      a word the next letter is nearly determined (embeddings + MLP).
//   2. Grammar: every line follows one of a few templates, "the ADJ NOUN VERB
//      the NOUN." (what comes next depends on the position in the line).
//   3. Copying: "NOUN and NOUN, NOUN and NOUN." repeats its first two nouns,
//      which only attention to earlier tokens can predict (an induction task).
//
// So a model that learns should go well below the loss of a unigram model,
// and a test can demand it. Deterministic for a seed (Xoshiro256).
//
// Text, tokenizers, windows and the split: Notebooks/part4-gpt.md, §7.

public enum SyntheticText {
    /// About `characters` characters (whole lines) of generated text.
    ///
    ///     SyntheticText.generate(characters: 200, seed: 1)
    ///     // "the bright kovat lemes the sarun.\nfimo and dal, fimo and dal.\n…"
    public static func generate(characters: Int, seed: UInt64) -> String {
        var rng = Xoshiro256(seed: seed)
        // A lexicon drawn once per seed: consonant-vowel syllables, 1 to 3 of them.
        let consonants = Array("bdfgklmnprstvz"), vowels = Array("aeiou")
        func word(_ syllables: Int) -> String {
            String((0..<syllables).flatMap { _ in [consonants[rng.below(consonants.count)], vowels[rng.below(vowels.count)]] })
                + (rng.below(2) == 0 ? String(consonants[rng.below(consonants.count)]) : "")
        }
        let nouns = (0..<12).map { _ in word(1 + rng.below(2)) }
        let verbs = (0..<6).map { _ in word(2) + "s" }
        let adjectives = ["bright", "small", "old", "quiet", "red", "swift"]
        func pick(_ list: [String]) -> String { list[rng.below(list.count)] }

        var text = ""
        var length = 0   // in characters; all ASCII, so UTF-8 bytes (String.count would rescan the text)
        while length < characters {
            let line: String
            switch rng.below(3) {
            case 0:
                line = "the \(pick(adjectives)) \(pick(nouns)) \(pick(verbs)) the \(pick(nouns)).\n"
            case 1:
                let (a, b) = (pick(nouns), pick(nouns))
                line = "\(a) and \(b), \(a) and \(b).\n"
            default:
                line = "a \(pick(nouns)) \(pick(verbs)).\n"
            }
            text += line
            length += line.utf8.count
        }
        return text
    }
}
