// GPTCheckpoint: a trained language model in one safetensors file.
//
// The tensors are the model's parameters under `GPT.namedParameters` names
// ("embedding.token", "blocks.1.moe.experts.3.up.weight", …). The metadata
// (safetensors allows a string → string map) holds everything needed to
// rebuild the model without the command line that made it: the GPTConfig
// fields and the tokenizer as JSON. So `gpt-moe sample --checkpoint FILE`
// needs the file and nothing else. Written atomically, like every file here.
import Foundation

public enum GPTCheckpoint {
    /// Writes the weights, the configuration and the tokenizer to `url`; `metadata` adds entries.
    public static func save(_ model: GPT, tokenizer: Tokenizer, to url: URL, metadata: [String: String] = [:]) throws {
        try Safetensors.write(model.namedParameters.map { ($0.name, $0.parameter.value) },
                              metadata: metadata.merging(describe(model.config, tokenizer: tokenizer)) { _, new in new },
                              to: url)
    }

    /// The configuration and tokenizer as metadata entries.
    static func describe(_ c: GPTConfig, tokenizer: Tokenizer) -> [String: String] {
        ["format": "gpt-moe", "vocabulary_size": String(c.vocabularySize), "context_length": String(c.contextLength),
         "layers": String(c.layers), "width": String(c.width), "heads": String(c.heads), "hidden": String(c.hidden),
         "moe_layers": c.moeLayers.map(String.init).joined(separator: ","), "experts": String(c.experts),
         "top_k": String(c.topK), "aux_weight": String(c.auxLossWeight), "tie_weights": String(c.tieWeights),
         "tokenizer": tokenizer.serialized()]
    }

    /// Rebuilds the model and tokenizer saved by `save`.
    /// - Throws: `SafetensorsError` / `TextError` naming the file and what is wrong with it.
    public static func load(from url: URL) throws -> (model: GPT, tokenizer: Tokenizer, metadata: [String: String]) {
        let file = try Safetensors.read(from: url)
        let m = file.metadata
        func fail(_ problem: String) -> Error { SafetensorsError(source: url.path, problem: problem) }
        guard m["format"] == "gpt-moe" else { throw fail("is not a gpt-moe checkpoint (no \"format\": \"gpt-moe\" in its metadata)") }
        func int(_ key: String) throws -> Int {
            guard let v = m[key].flatMap(Int.init), v >= 0 else { throw fail("metadata \"\(key)\" is missing or not a count") }
            return v
        }
        var c = GPTConfig()
        c.vocabularySize = try int("vocabulary_size"); c.contextLength = try int("context_length")
        c.layers = try int("layers"); c.width = try int("width"); c.heads = try int("heads")
        c.hidden = try int("hidden"); c.experts = try int("experts"); c.topK = try int("top_k")
        let layers = (m["moe_layers"] ?? "").split(separator: ",").map { Int($0) }
        guard layers.allSatisfy({ $0 != nil && $0! < c.layers }) else { throw fail("metadata \"moe_layers\" is not a list of block indices") }
        c.moeLayers = layers.map { $0! }
        guard let alpha = m["aux_weight"].flatMap(Float.init), let tie = m["tie_weights"].flatMap(Bool.init) else {
            throw fail("metadata \"aux_weight\" or \"tie_weights\" is missing")
        }
        c.auxLossWeight = alpha; c.tieWeights = tie
        guard c.vocabularySize > 0, c.contextLength > 0, c.layers > 0, c.heads > 0, c.width % c.heads == 0,
              c.hidden > 0, c.topK >= 1, c.topK <= c.experts else {
            throw fail("metadata describes an impossible model: \(c)")
        }
        guard let text = m["tokenizer"] else { throw fail("metadata has no \"tokenizer\"") }
        let tokenizer = try TokenizerFile.decode(text, source: url.path)
        guard tokenizer.vocabularySize == c.vocabularySize else {
            throw fail("tokenizer has \(tokenizer.vocabularySize) tokens, the model \(c.vocabularySize)")
        }
        var rng = Xoshiro256(seed: 0)   // every value is overwritten by the file
        let model = GPT(config: c, rng: &rng)
        try Checkpoint.load(model.namedParameters, from: file)
        return (model, tokenizer, m)
    }
}
