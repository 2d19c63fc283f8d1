// PretrainedConfig: what `config.json` says about a Hugging Face MoE checkpoint.
//
// A checkpoint folder holds the weights (safetensors), the tokenizer
// (tokenizer.json) and `config.json`, a flat JSON object of hyperparameters.
// The four families this project runs all share one skeleton — a decoder-only
// transformer whose feed-forward is a sparse mixture of SwiGLU experts — and
// differ in a handful of switches, all read here (Notebooks/part5-pretrained.md, §1):
//
//     family      routing (TopKGating)                 extras
//     mixtral     softmax → top-k → renormalise         —
//     olmoe       softmax → top-k, no renormalisation   RMSNorm on q and k (QK-norm)
//     qwen2_moe   softmax → top-k (norm_topk_prob)      shared expert behind a sigmoid gate, q/k/v biases
//     granitemoe  top-k → softmax                       embedding/residual/attention/logit multipliers,
//                                                       fused expert tensors
//
// Every field is checked as it is read: a missing field, a field of the wrong
// type or an impossible value (heads that do not divide the width, k > E) is a
// one-line error naming `config.json` and the field, thrown before any weight
// is touched.
//
// Legend: D model width (hidden_size), H query heads, G key/value heads,
// Dh head width, E experts, K experts per token, F expert width, V vocabulary.
import Foundation

/// A problem with a pretrained checkpoint folder, as one line: `"FILE: problem"`.
public struct PretrainedError: Error, CustomStringConvertible, LocalizedError {
    /// The file (or folder) at fault.
    public var file: String
    /// What is wrong with it.
    public var problem: String
    public init(file: String, problem: String) { self.file = file; self.problem = problem }
    public var description: String { "\(file): \(problem)" }
    public var errorDescription: String? { description }
}

/// The architecture families `pretrained-moe` runs, by `model_type`.
public enum PretrainedFamily: String, CaseIterable {
    case mixtral, olmoe, qwen2_moe = "qwen2_moe", granitemoe
}

/// The hyperparameters of one checkpoint, validated.
public struct PretrainedConfig {
    public var family: PretrainedFamily
    public var vocabularySize: Int          // V
    public var hiddenSize: Int              // D
    public var layerCount: Int              // number of decoder layers
    public var headCount: Int               // H
    public var keyValueHeadCount: Int       // G (H when the config has no num_key_value_heads)
    public var headSize: Int                // Dh (D / H unless head_dim says otherwise)
    public var expertCount: Int             // E
    public var expertsPerToken: Int         // K
    public var expertSize: Int              // F, the width of each routed expert's hidden layer
    public var rmsNormEpsilon: Float
    public var ropeTheta: Double
    public var tiedEmbeddings: Bool
    /// Renormalise the K chosen probabilities (mixtral: always; olmoe/qwen2_moe: norm_topk_prob).
    public var renormalizeTopK: Bool
    /// qwen2_moe: the shared expert's width (0: none).
    public var sharedExpertSize: Int
    /// qwen2_moe: biases on the q, k and v projections (qkv_bias, true in every release).
    public var attentionBias: Bool
    /// olmoe: RMSNorm over q and k before RoPE.
    public var queryKeyNorm: Bool
    /// olmoe: clip q, k, v to [−c, c] (nil: off).
    public var clipQKV: Float?
    /// granitemoe's four multipliers (1 elsewhere; attention: 1/√Dh elsewhere).
    public var embeddingMultiplier: Float
    public var residualMultiplier: Float
    public var attentionMultiplier: Float
    public var logitsScaling: Float
    /// The longest sequence this model is run on exactly: max_position_embeddings,
    /// or mixtral's sliding_window when smaller (beyond it, attention would have to
    /// forget the oldest positions, which this code does not do).
    public var maxPositions: Int
    public var bosTokenID: Int?
    public var eosTokenIDs: [Int]

    /// The supported `model_type` values, for error messages.
    public static var supportedTypes: String { PretrainedFamily.allCases.map(\.rawValue).joined(separator: ", ") }

    /// Reads `config.json` in `directory`.
    public static func load(directory: URL) throws -> PretrainedConfig {
        let url = directory.appendingPathComponent("config.json")
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw PretrainedError(file: url.path, problem: "no such file (a checkpoint folder needs config.json)")
        }
        return try parse(data, source: url.path)
    }

    /// Parses the bytes of a `config.json`; `source` names it in errors.
    public static func parse(_ data: Data, source: String) throws -> PretrainedConfig {
        guard let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw PretrainedError(file: source, problem: "not a JSON object")
        }
        let r = FieldReader(object: object, source: source)
        let type = try r.string("model_type")
        guard let family = PretrainedFamily(rawValue: type) else {
            throw PretrainedError(file: source, problem: "model_type '\(type)' is not supported (supported: \(supportedTypes))")
        }
        let d = try r.int("hidden_size", min: 1)
        let h = try r.int("num_attention_heads", min: 1)
        let g = try r.int("num_key_value_heads", min: 1, default: h)
        guard h % g == 0 else {
            throw PretrainedError(file: source, problem: "num_attention_heads \(h) is not a multiple of num_key_value_heads \(g)")
        }
        let dh = try r.int("head_dim", min: 1, default: d % h == 0 ? d / h : nil)
        guard dh % 2 == 0 else { throw PretrainedError(file: source, problem: "head_dim \(dh) is odd; rotary embeddings rotate pairs") }
        // RoPE: `rope_theta` at the top level (checkpoints written by transformers 4),
        // or inside `rope_parameters` (transformers 5). Only the plain rotation is supported.
        var ropeTheta = Double(try r.float("rope_theta", default: 10_000))
        if let scaling = object["rope_scaling"], !(scaling is NSNull) {
            let kind = (scaling as? [String: Any])?["rope_type"] as? String ?? (scaling as? [String: Any])?["type"] as? String
            if kind != "default" {
                throw PretrainedError(file: source, problem: "field 'rope_scaling' asks for \(kind ?? "a scaled") RoPE; only plain RoPE (rope_scaling null) is supported")
            }
        }
        if let parameters = object["rope_parameters"], !(parameters is NSNull) {
            guard let rope = parameters as? [String: Any] else {
                throw PretrainedError(file: source, problem: "field 'rope_parameters' is not an object")
            }
            let nested = FieldReader(object: rope, source: source)
            if let kind = rope["rope_type"] as? String, kind != "default" {
                throw PretrainedError(file: source, problem: "field 'rope_parameters.rope_type' is '\(kind)'; only 'default' RoPE is supported")
            }
            ropeTheta = Double(try nested.float("rope_theta", default: Float(ropeTheta)))
        }
        if family != .qwen2_moe, try r.bool("attention_bias", default: false) {
            throw PretrainedError(file: source, problem: "field 'attention_bias' is true; \(type) checkpoints with attention biases are not supported")
        }
        let experts: Int, k: Int
        switch family {
        case .mixtral: experts = try r.int("num_local_experts", min: 1); k = try r.int("num_experts_per_tok", min: 1)
        case .olmoe, .qwen2_moe: experts = try r.int("num_experts", min: 1); k = try r.int("num_experts_per_tok", min: 1)
        case .granitemoe: experts = try r.int("num_local_experts", min: 1); k = try r.int("num_experts_per_tok", min: 1)
        }
        guard k <= experts else {
            throw PretrainedError(file: source, problem: "num_experts_per_tok \(k) is larger than the \(experts) experts")
        }
        let expertWidth = family == .qwen2_moe ? try r.int("moe_intermediate_size", min: 1) : try r.int("intermediate_size", min: 1)
        if family == .qwen2_moe {
            // Qwen2-MoE can make some layers dense; the released models never do.
            if try r.int("decoder_sparse_step", min: 1, default: 1) != 1 {
                throw PretrainedError(file: source, problem: "decoder_sparse_step is not 1; only all-sparse qwen2_moe models are supported")
            }
            if let dense = object["mlp_only_layers"] as? [Any], !dense.isEmpty {
                throw PretrainedError(file: source, problem: "mlp_only_layers is not empty; only all-sparse qwen2_moe models are supported")
            }
            if try r.bool("use_sliding_window", default: false) {
                throw PretrainedError(file: source, problem: "use_sliding_window is true; sliding-window attention is not supported")
            }
        }
        var eos: [Int] = []
        if let list = object["eos_token_id"] as? [Any] { eos = list.compactMap { ($0 as? NSNumber)?.intValue } }
        else if let one = object["eos_token_id"] as? NSNumber { eos = [one.intValue] }
        let attentionDefault = 1 / Float(dh).squareRoot()
        return PretrainedConfig(
            family: family,
            vocabularySize: try r.int("vocab_size", min: 1),
            hiddenSize: d,
            layerCount: try r.int("num_hidden_layers", min: 1),
            headCount: h, keyValueHeadCount: g, headSize: dh,
            expertCount: experts, expertsPerToken: k, expertSize: expertWidth,
            rmsNormEpsilon: try r.float("rms_norm_eps", default: 1e-6),
            ropeTheta: ropeTheta,
            tiedEmbeddings: try r.bool("tie_word_embeddings", default: family == .granitemoe),
            renormalizeTopK: family == .mixtral ? true
                : family == .granitemoe ? true   // a softmax over the K chosen logits sums to 1 by construction
                : try r.bool("norm_topk_prob", default: false),
            sharedExpertSize: family == .qwen2_moe ? try r.int("shared_expert_intermediate_size", min: 0, default: 0) : 0,
            attentionBias: family == .qwen2_moe ? try r.bool("qkv_bias", default: true) : false,
            queryKeyNorm: family == .olmoe,
            clipQKV: family == .olmoe ? try r.optionalFloat("clip_qkv") : nil,
            embeddingMultiplier: family == .granitemoe ? try r.float("embedding_multiplier", default: 1) : 1,
            residualMultiplier: family == .granitemoe ? try r.float("residual_multiplier", default: 1) : 1,
            // Granite replaces 1/√Dh by attention_multiplier (its config's default is 1).
            attentionMultiplier: family == .granitemoe ? try r.float("attention_multiplier", default: 1) : attentionDefault,
            logitsScaling: family == .granitemoe ? try r.float("logits_scaling", default: 1) : 1,
            maxPositions: min(try r.int("max_position_embeddings", min: 1, default: 4096),
                              family == .mixtral ? try r.int("sliding_window", min: 1, default: Int.max) : Int.max),
            bosTokenID: (object["bos_token_id"] as? NSNumber)?.intValue,
            eosTokenIDs: eos)
    }
}

/// Reads typed fields from a JSON object, failing with the field's name.
struct FieldReader {
    let object: [String: Any]
    let source: String

    func fail(_ field: String, _ problem: String) -> PretrainedError {
        PretrainedError(file: source, problem: "field '\(field)' \(problem)")
    }

    /// Whether a JSONSerialization value is `true`/`false`. Not `value is Bool`:
    /// an NSNumber holding 0 or 1 also casts to Bool. JSON booleans are the
    /// NSNumbers whose C type is "c" (char), on Linux and on Darwin.
    static func isBoolean(_ value: Any) -> Bool {
        guard let number = value as? NSNumber else { return value is Bool }
        return String(cString: number.objCType) == "c"
    }

    /// A JSON number that is a whole number (booleans are refused).
    func int(_ field: String, min: Int, default fallback: Int? = nil) throws -> Int {
        guard let raw = object[field], !(raw is NSNull) else {
            if let fallback { return fallback }
            throw fail(field, "is missing")
        }
        guard let number = raw as? NSNumber, !FieldReader.isBoolean(raw), let value = Int(exactly: number.doubleValue) else {
            throw fail(field, "is \(describe(raw)), expected a whole number")
        }
        guard value >= min else { throw fail(field, "is \(value), expected at least \(min)") }
        return value
    }

    func float(_ field: String, default fallback: Float) throws -> Float {
        guard let raw = object[field], !(raw is NSNull) else { return fallback }
        guard let number = raw as? NSNumber, !FieldReader.isBoolean(raw), number.doubleValue.isFinite else {
            throw fail(field, "is \(describe(raw)), expected a number")
        }
        return number.floatValue
    }

    func optionalFloat(_ field: String) throws -> Float? {
        guard let raw = object[field], !(raw is NSNull) else { return nil }
        return try float(field, default: 0)
    }

    func bool(_ field: String, default fallback: Bool) throws -> Bool {
        guard let raw = object[field], !(raw is NSNull) else { return fallback }
        guard FieldReader.isBoolean(raw), let flag = raw as? Bool else { throw fail(field, "is \(describe(raw)), expected true or false") }
        return flag
    }

    func string(_ field: String) throws -> String {
        guard let raw = object[field] else { throw fail(field, "is missing") }
        guard let text = raw as? String else { throw fail(field, "is \(describe(raw)), expected a string") }
        return text
    }

    func describe(_ value: Any) -> String {
        if value is String { return "a string" }
        if FieldReader.isBoolean(value) { return "a boolean" }
        if value is NSNumber { return "\(value)" }
        if value is [Any] { return "an array" }
        if value is [String: Any] { return "an object" }
        return "null"
    }
}
