// Command-line options of gpt-moe. The defaults are sized so that
// `swift run gpt-moe` trains the MoE baseline on Tiny Shakespeare to a
// validation loss under 2.0 nats per character within 5 minutes on 2 cores
// (README, "gpt-moe", has the measured run).
//
// The runs: Notebooks/part4-gpt.md, §8.
import Foundation
import MoE

struct Options {
    var command = "train"          // train | compare | sample
    var preset = "baseline"        // train: which of Preset.all

    // The run's length.
    var steps = 1200               // Adam steps; the run stops at this or at --epochs
    var epochs = 100               // passes over the training windows (the steps decide by default)
    var evalInterval = 100         // steps between validation evaluations
    var evalWindows = 256          // validation windows per evaluation (of ~1,700 at context 64)
    var patience = 0               // evaluations without improvement before stopping; 0: never
    var timingRounds = 30          // compare: interleaved timing rounds after training (0: none)
    var probeWindows = 16          // validation windows whose routing each evaluation records (1,024 tokens)

    // The model.
    var layers = 4
    var width = 64                 // C
    var heads = 4                  // head size 16
    var context = 64               // T: characters a prediction can look back on
    var hidden: Int? = nil         // MLP / expert hidden width; default 4·C as in GPT-2
    var tieWeights = true

    // The data.
    var text: String? = nil        // default: data/tinyshakespeare/input.txt, downloaded when missing
    var synthetic = false
    var syntheticCharacters = 200_000
    var tokenizer = "char"
    var vocab = 10_000             // BPE only: the notes' vocabulary size
    var stride: Int? = nil         // default: the context (windows tile the text)
    var validationFraction = 0.1   // the last 10% of the text, as nanoGPT splits it
    var download = true

    // The MoE. Routing flags are kept as changes to apply on top of each preset's
    // routing (RoutingSetup), in the order given (RoutingFlags, shared with mnist-moe).
    var experts = 8
    var moeLayers: String? = nil   // "every-other", "all", "none" or "1,3" (0-based blocks)
    var routingFlags = RoutingFlags()

    // Optimisation.
    var batchSize = 32             // windows per step (throughput_opt doubles it)
    var learningRate: Float = 3e-3 // Adam; a model this small tolerates a high rate
    var seed: UInt64 = 0
    var threads = ProcessInfo.processInfo.activeProcessorCount
    var out = "runs/gpt-moe"

    // Sampling.
    var checkpoint: String? = nil
    var prompt = "\n"
    var length = 400               // tokens to generate
    var temperature: Float = 0.8
    var sampleTopK = 0             // 0: sample from every token
    var help = false

    static var usage: String {
        let presets = Preset.all.map { "  \($0.name.padding(toLength: 15, withPad: " ", startingAt: 0)) \($0.summary)" }
            .joined(separator: "\n")
        return """
        usage: gpt-moe [train] [options]
               gpt-moe compare [options]
               gpt-moe sample --checkpoint FILE [--prompt TEXT] [sampling options]
               gpt-moe route --checkpoint FILE --prompt TEXT [--json] [--svg FILE]
               gpt-moe specialize --checkpoint FILE --domains DIR [analysis options]

        Trains a small GPT whose feed-forward sublayers are dense or mixtures of experts,
        with every backward pass written by hand. `train` (the default) trains one preset
        and prints a sample; `compare` trains all five presets under one seed and prints
        the notes' results table; `sample` continues a prompt from a saved checkpoint.

        Presets (--preset; compare runs all five; flags below override them):
        \(presets)

        Run length:
          --steps N          Adam steps (default 1200); stops earlier at --epochs
          --epochs N         passes over the training windows (default 100)
          --eval-interval N  steps between validation losses (default 100)
          --eval-windows N   validation windows per evaluation, 0 = all (default 256)
          --patience N       stop after N evaluations without a new best, 0 = never (default 0)
          --timing-rounds N  compare: after training, N rounds of one step per model in turn,
                             timed for the speed ratios; 0 = none (default 30)
          --probe-windows N  validation windows whose top-1 experts every evaluation records,
                             for the routing stability curve; 0 = none (default 16)
        Model:
          --preset NAME      train: dense, baseline, top2, strong_reg or throughput_opt (default baseline)
          --layers N         transformer blocks (default 4)
          --width N          model width C (default 64)
          --heads N          attention heads; must divide the width (default 4)
          --context N        tokens a prediction sees, T (default 64)
          --hidden N         hidden width of the MLP and of each expert (default 4 × width)
          --no-tie           a separate output head instead of the token embedding
        Data:
          --text FILE        a UTF-8 text file (default data/tinyshakespeare/input.txt,
                             downloaded when missing)
          --synthetic        a generated corpus with learnable structure instead of a file
          --synthetic-chars N  its length in characters (default 200000)
          --no-download      fail instead of downloading Tiny Shakespeare
          --tokenizer KIND   char or bpe (default char)
          --vocab N          bpe vocabulary size, 257 or more (default 10000)
          --stride N         tokens between training windows (default: the context)
          --val-fraction X   share of the text held out at its end (default 0.1)
        Mixture of experts:
          --experts N        experts per MoE layer (default 8)
          --moe-layers L     every-other, all, none, or block indices from 0 like 1,3
                             (default: every-other for MoE presets, none for dense)
        Routing and balancing, as in mnist-moe (Sources/MoE/MoE/RoutingSetup.swift);
        each changes the preset's routing (top-k softmax, Switch loss):
        \(RoutingFlags.usage(topK: "the preset's", auxWeight: "the preset's"))
          (top-1 softmax routing is never renormalised here: Switch's gate, output times probability)
        Optimisation:
          --batch-size N     windows per step (default 32; throughput_opt uses twice this
                             for half the steps)
          --lr X             Adam learning rate (default 0.003)
          --seed N           seed for weights, data order and sampling (default 0)
          --threads N        threads for the compute kernels (default: all cores)
          --out DIR          where summary.json, plots, checkpoints go (default runs/gpt-moe)
        Sampling (after train, and for `sample`):
          --checkpoint FILE  sample: the .safetensors file written by train or compare
          --prompt TEXT      text to continue (default a newline)
          --length N         tokens to generate (default 400)
          --sample-temperature X  divide the logits by X; 0 = always the likeliest (default 0.8)
          --sample-top-k N   sample among the N likeliest tokens, 0 = all (default 0)
        Routing analysis (Notebooks/part6-specialization.md):
          route              per token and MoE block of --prompt (at most the context),
                             the chosen experts: a grid of top-1 experts, coloured on a terminal
            --json           instead, {"tokens", "layers": [{"layer", "experts", "weights"}]}
            --svg FILE       also a token × block heatmap
          specialize         per MoE block, each expert's share of each domain's tokens, the
                             mutual information domain ↔ expert beside its permutation chance
                             level and p-value, the tokens of highest lift per expert; the same
                             with the token's frequency band in the training text
            --domains DIR    one UTF-8 file per domain, the file name its name
            --text FILE      the training text, for the bands (default data/tinyshakespeare/input.txt)
            --val-fraction X as in training: the bands count the text before it (default 0.1)
            --bands N        frequency bands, 3 = rare/middle/common terciles (default 3)
            --band-by WHAT   tokens: each band ~1/N of the training tokens; types: of the
                             vocabulary (default tokens)
            --permutations N label shuffles for the chance level and p-value (default 1000)
            --seed N         seed of the shuffles (default 0)
            --top-tokens N   characteristic tokens per expert (default 5)
            --min-count N    occurrences a token needs to be ranked by lift (default 5)
            --out DIR        also write specialization.json and heatmaps there
            --against FILE   a second checkpoint (another seed): how much its top-1 experts
                             say about this one's, block by block, on the same tokens
          -h, --help         this text
        """
    }

    /// Parses the arguments; throws a one-line message on anything wrong.
    static func parse(_ arguments: [String]) throws -> Options {
        var o = Options()
        var args = ArgumentReader(arguments)
        if let first = arguments.first, ["train", "compare", "sample"].contains(first) {
            o.command = first
            _ = args.next()
        }
        var sawPreset = false, sawTimingRounds = false
        while let flag = args.next() {
            switch flag {
            case "--preset":
                o.preset = try args.value(flag)
                sawPreset = true
                guard Preset.named(o.preset) != nil else {
                    throw UsageError("--preset must be one of \(Preset.all.map(\.name).joined(separator: ", ")), got '\(o.preset)'")
                }
            case "--steps": o.steps = try args.int(flag, 1...10_000_000)
            case "--epochs": o.epochs = try args.int(flag, 1...100_000)
            case "--eval-interval": o.evalInterval = try args.int(flag, 1...10_000_000)
            case "--eval-windows": o.evalWindows = try args.int(flag, 0...10_000_000)
            case "--patience": o.patience = try args.int(flag, 0...100_000)
            case "--timing-rounds": o.timingRounds = try args.int(flag, 0...100_000); sawTimingRounds = true
            case "--probe-windows": o.probeWindows = try args.int(flag, 0...100_000)
            case "--layers": o.layers = try args.int(flag, 1...64)
            case "--width": o.width = try args.int(flag, 1...8192)
            case "--heads": o.heads = try args.int(flag, 1...256)
            case "--context": o.context = try args.int(flag, 1...8192)
            case "--hidden": o.hidden = try args.int(flag, 1...65_536)
            case "--no-tie": o.tieWeights = false
            case "--text": o.text = try args.value(flag)
            case "--synthetic": o.synthetic = true
            case "--synthetic-chars": o.syntheticCharacters = try args.int(flag, 100...100_000_000)
            case "--no-download": o.download = false
            case "--tokenizer":
                o.tokenizer = try args.value(flag)
                guard ["char", "bpe"].contains(o.tokenizer) else {
                    throw UsageError("--tokenizer must be char or bpe, got '\(o.tokenizer)'")
                }
            case "--vocab": o.vocab = try args.int(flag, 257...1_000_000)
            case "--stride": o.stride = try args.int(flag, 1...8192)
            case "--val-fraction": o.validationFraction = Double(try args.float(flag, 0.001...0.9))
            case "--experts": o.experts = try args.int(flag, 1...1024)
            case "--moe-layers":
                let text = try args.value(flag)
                guard ["every-other", "all", "none"].contains(text)
                        || (!text.isEmpty && text.split(separator: ",", omittingEmptySubsequences: false).allSatisfy({ Int($0).map { $0 >= 0 } ?? false })) else {
                    throw UsageError("--moe-layers must be every-other, all, none or block indices like 1,3, got '\(text)'")
                }
                o.moeLayers = text
            case "--batch-size": o.batchSize = try args.int(flag, 1...100_000)
            case "--lr": o.learningRate = try args.float(flag, 1e-8...10)
            case "--seed":
                let text = try args.value(flag)
                guard let s = UInt64(text) else { throw UsageError("--seed must be a non-negative integer, got '\(text)'") }
                o.seed = s
            case "--threads": o.threads = try args.int(flag, 1...256)
            case "--out": o.out = try args.value(flag)
            case "--checkpoint": o.checkpoint = try args.value(flag)
            case "--prompt": o.prompt = try args.value(flag)
            case "--length": o.length = try args.int(flag, 0...1_000_000)
            case "--sample-temperature": o.temperature = try args.float(flag, 0...100)
            case "--sample-top-k": o.sampleTopK = try args.int(flag, 0...1_000_000)
            case "-h", "--help": o.help = true
            default:
                if ["train", "compare", "sample"].contains(flag) {
                    throw UsageError("the command '\(flag)' must come first, before any option")
                }
                guard try o.routingFlags.parse(flag, from: &args) else { throw UsageError("unknown option '\(flag)'") }
            }
        }
        if o.help { return o }
        o.routingFlags.finish()
        guard o.width % o.heads == 0 else {
            throw UsageError("--heads \(o.heads) does not divide --width \(o.width)")
        }
        if let k = o.routingFlags.topK, k > o.experts {
            throw UsageError("--top-k \(k) is more than --experts \(o.experts)")
        }
        // Every routing this run will build must be possible (the message names the flag).
        let presets = o.command == "compare" ? Preset.all : Preset.named(o.preset).map { [$0] } ?? []
        for preset in presets where !o.modelConfig(preset, vocabularySize: 1).moeLayers.isEmpty {
            do { try o.routing(preset).validate(experts: o.experts) } catch { throw UsageError("\(error)") }
        }
        if let list = o.moeLayers, let bad = o.explicitMoELayers(list)?.first(where: { $0 >= o.layers }) {
            throw UsageError("--moe-layers names block \(bad), but --layers \(o.layers) has blocks 0...\(o.layers - 1)")
        }
        if o.synthetic && o.text != nil { throw UsageError("--synthetic and --text cannot be used together") }
        if o.command == "sample" && o.checkpoint == nil { throw UsageError("sample needs --checkpoint FILE") }
        if o.command != "sample" && o.checkpoint != nil { throw UsageError("--checkpoint is for the sample command") }
        if o.command == "compare" && sawPreset { throw UsageError("--preset is for train; compare runs every preset") }
        if o.command != "compare" && sawTimingRounds { throw UsageError("--timing-rounds is for compare") }
        return o
    }

    /// A comma list of block indices, or nil for the named placements.
    func explicitMoELayers(_ text: String) -> [Int]? {
        ["every-other", "all", "none"].contains(text) ? nil : text.split(separator: ",").compactMap { Int($0) }
    }

    /// The model a preset trains, with these options applied.
    func modelConfig(_ preset: Preset, vocabularySize: Int) -> GPTConfig {
        var c = GPTConfig()
        c.vocabularySize = vocabularySize
        c.contextLength = context
        c.layers = layers
        c.width = width
        c.heads = heads
        c.hidden = hidden ?? 4 * width
        c.tieWeights = tieWeights
        c.experts = experts
        c.routing = routing(preset)
        c.routerSeed = seed
        switch moeLayers ?? (preset.routing != nil ? "every-other" : "none") {
        case "every-other": c.moeLayers = GPTConfig.everyOtherLayer(of: layers)
        case "all": c.moeLayers = Array(0..<layers)
        case "none": c.moeLayers = []
        case let list: c.moeLayers = Array(Set(explicitMoELayers(list) ?? [])).sorted()
        }
        return c
    }

    /// A preset's routing with the routing flags applied, in the order given. The
    /// dense preset has none; should --moe-layers give it MoE blocks, they route as baseline's.
    func routing(_ preset: Preset) -> RoutingSetup {
        routingFlags.applied(to: preset.routing ?? Preset.topK(1, alpha: 0.01))
    }

    /// The training settings of a preset, with these options applied.
    func trainingConfig(_ preset: Preset) -> LanguageModelTrainingConfig {
        var t = LanguageModelTrainingConfig()
        // A preset with k× the windows per step takes 1/k of the steps and evaluates
        // every 1/k of the interval: every preset sees the same tokens, and the
        // evaluations fall at the same token counts.
        t.batchSize = batchSize * preset.batchMultiplier
        t.learningRate = learningRate
        t.steps = max(1, steps / preset.batchMultiplier)
        t.epochs = epochs
        t.evalInterval = max(1, evalInterval / preset.batchMultiplier)
        t.evalWindows = evalWindows
        t.patience = patience
        t.probeWindows = probeWindows
        t.seed = seed
        return t
    }

    /// The configuration as it goes into summary.json.
    var json: [String: Any] {
        var j: [String: Any] = [
            "command": command, "steps": steps, "epochs": epochs, "eval_interval": evalInterval,
            "eval_windows": evalWindows, "patience": patience, "probe_windows": probeWindows, "layers": layers, "width": width, "heads": heads,
            "context": context, "hidden": hidden ?? 4 * width, "tie_weights": tieWeights,
            "text": synthetic ? "synthetic" : (text ?? TinyShakespeare.defaultPath), "tokenizer": tokenizer,
            "stride": stride ?? context, "val_fraction": validationFraction, "experts": experts,
            "batch_size": batchSize, "lr": Double("\(learningRate)")!, "seed": seed, "threads": threads,
        ]
        if tokenizer == "bpe" { j["vocab"] = vocab }
        if synthetic { j["synthetic_chars"] = syntheticCharacters }
        if command == "train" { j["preset"] = preset } else { j["timing_rounds"] = timingRounds }
        if let m = moeLayers { j["moe_layers"] = m }
        if !routingFlags.words.isEmpty { j["routing_flags"] = routingFlags.words }
        return j
    }
}

