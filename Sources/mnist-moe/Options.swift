// Command-line options of mnist-moe: every default is the walkthrough's setup
// (Part 3: 5,000 training images, 30 epochs, Adam 1e-3, batch 64, α 0.1,
// 8 experts, top-2, width 256, expert hidden 128, seed 0).
//
// The run these options describe: Notebooks/part3-mnist.md, §1.
import Foundation
import MoE

/// How pixels reach the model.
enum Normalization: String {
    /// x / 255, in [0, 1].
    case none
    /// (x / 255 − 0.1307) / 0.3081: the training set's mean and standard deviation, as torchvision examples use.
    case meanstd
}

/// Which training images a run uses.
enum SubsetChoice: String {
    case first, random
}

struct Options {
    var command = "train"          // train | ablate
    var trainSize = 5_000          // the walkthrough's training subset
    var epochs = 30
    var batchSize = 64
    var learningRate: Float = 1e-3
    var experts = 8
    /// Router, balancing, capacity, shared experts: the walkthrough's by default.
    var routing = RoutingSetup()
    var auxWeight: Float {          // α; 0 shows what happens without balancing
        get { routing.auxWeight }
        set { routing.auxWeight = newValue }
    }
    var topK: Int {
        get { routing.router == "switch" ? 1 : routing.k }
        set { routing.k = newValue }
    }
    var hidden = 256               // model width D
    var expertHidden = 128         // hidden width of each expert (and of the dense FFN)
    var model = "both"             // moe | dense | both
    /// walkthrough: Part 2's model (ReLU after the MoE, bias-free gate, learned
    /// noise); v1: this project's first model (none of the three).
    var variant = ClassifierVariant.walkthrough
    /// Pixel preprocessing. The series never says. `none` (pixels / 255) is the
    /// default because it is the better one for the MoE, the model the series is
    /// about: over seeds 0-4, 94.22 ± 0.49% test accuracy against 93.52 ± 0.57%
    /// with meanstd (the dense model goes the other way, 94.26 against 94.72).
    /// Notebooks/part3-mnist.md, §5.
    var normalize = Normalization.none
    /// Which training images: the first N of the file, or N drawn with the seed.
    var subset = SubsetChoice.first
    var seed: UInt64 = 0
    /// --seeds: several runs, reported as mean ± standard deviation; nil: just `seed`.
    var seeds: [UInt64]? = nil
    var threads = ProcessInfo.processInfo.activeProcessorCount
    var dataDir: String? = nil
    var out: String? = nil         // default runs/mnist-moe (runs/mnist-moe-ablate for ablate)
    var initFrom: String? = nil    // start from these weights
    var resume: String? = nil      // continue a run from a .resume.safetensors file
    var shuffle = true
    var download = true
    var help = false

    static let usage = """
    usage: mnist-moe [options]
           mnist-moe ablate [options]

    Trains the walkthrough's MoE classifier (8 experts, top-2) and its dense baseline on
    MNIST and prints the tables of Part 3 from this run. Defaults reproduce the walkthrough.
    `ablate` trains the MoE once per routing/balancing configuration of a preset list
    (same seed, data and epochs; the routing options below are ignored) and prints one
    row per configuration; results go to runs/mnist-moe-ablate unless --out says otherwise.

      --train-size N     training images, the first N of 60,000 (default 5000)
      --epochs N         passes over the training images (default 30)
      --batch-size N     images per Adam step (default 64)
      --lr X             Adam learning rate (default 0.001)
      --experts N        experts in the MoE layer (default 8)
      --hidden N         model width D (default 256)
      --expert-hidden N  hidden width of each expert and of the dense FFN (default 128)
      --model M          moe, dense or both (default both)
      --variant V        walkthrough (Part 2's model: ReLU after the MoE, bias-free gate,
                         learned gate noise; the default) or v1 (this project's first model:
                         no ReLU after the MoE or FFN, gate with a bias, no noise)
      --normalize N      none (pixels / 255, default) or meanstd ((x - 0.1307) / 0.3081)
      --subset S         first (the first --train-size images, default) or random (drawn
                         with the seed)
      --seed N           seed for weights, noise and data order (default 0)
      --seeds LIST       several seeds, e.g. 0-4 or 0,3,7: one run each, then mean ± std
                         beside the walkthrough's numbers (checkpoints in --out/seed-N)
      --threads N        threads for the compute kernels (default: all cores)
      --data-dir DIR     MNIST folder (default: $MNIST_DIR, else ./data/mnist);
                         missing files are downloaded there, from the mirrors in
                         $MNIST_MIRRORS (comma-separated base URLs) if set
      --no-download      fail instead of downloading missing files
      --out DIR          where summary.json, plots and checkpoints go (default runs/mnist-moe)
      --init FILE        start from the weights in FILE (a .safetensors checkpoint)
      --resume FILE      continue the run saved in FILE (a .resume.safetensors checkpoint)
      --no-shuffle       keep the training images in file order
      -h, --help         this text

    Routing and balancing (Sources/MoE/MoE/RoutingFlags.swift; `ablate` ignores these):
    \(RoutingFlags.usage())
    """

    /// Parses the arguments; throws a one-line message on anything wrong.
    static func parse(_ arguments: [String]) throws -> Options {
        var o = Options()
        var args = ArgumentReader(arguments)
        var routingFlags = RoutingFlags()
        while let flag = args.next() {
            switch flag {
            case "ablate": o.command = "ablate"   // the subcommand, usually first
            case "--train-size": o.trainSize = try args.int(flag, 1...60_000)
            case "--epochs": o.epochs = try args.int(flag, 0...10_000)
            case "--batch-size": o.batchSize = try args.int(flag, 1...60_000)
            case "--lr": o.learningRate = try args.float(flag, 1e-8...10)
            case "--experts": o.experts = try args.int(flag, 1...1024)
            case "--hidden": o.hidden = try args.int(flag, 1...65_536)
            case "--expert-hidden": o.expertHidden = try args.int(flag, 1...65_536)
            case "--model":
                o.model = try args.value(flag)
                guard ["moe", "dense", "both"].contains(o.model) else {
                    throw UsageError("--model must be moe, dense or both, got '\(o.model)'")
                }
            case "--seed":
                let text = try args.value(flag)
                guard let s = UInt64(text) else { throw UsageError("--seed must be a non-negative integer, got '\(text)'") }
                o.seed = s
            case "--seeds": o.seeds = try parseSeeds(try args.value(flag))
            case "--variant":
                let text = try args.value(flag)
                guard let v = ClassifierVariant(rawValue: text) else {
                    throw UsageError("--variant must be walkthrough or v1, got '\(text)'")
                }
                o.variant = v
            case "--normalize":
                let text = try args.value(flag)
                guard let n = Normalization(rawValue: text) else {
                    throw UsageError("--normalize must be none or meanstd, got '\(text)'")
                }
                o.normalize = n
            case "--subset":
                let text = try args.value(flag)
                guard let c = SubsetChoice(rawValue: text) else {
                    throw UsageError("--subset must be first or random, got '\(text)'")
                }
                o.subset = c
            case "--threads": o.threads = try args.int(flag, 1...256)
            case "--data-dir": o.dataDir = try args.nonEmptyValue(flag)
            case "--out": o.out = try args.nonEmptyValue(flag)
            case "--init": o.initFrom = try args.nonEmptyValue(flag)
            case "--resume": o.resume = try args.nonEmptyValue(flag)
            case "--no-shuffle": o.shuffle = false
            case "--no-download": o.download = false
            case "-h", "--help": o.help = true
            default:
                guard try routingFlags.parse(flag, from: &args) else {
                    throw UsageError.unknownOption(flag, known: flags(inUsage: usage) + ["ablate"])
                }
            }
        }
        routingFlags.finish()
        // The variant sets the gate; routing flags given on the command line still win.
        if o.variant == .v1 { o.routing.gateNoise = .none; o.routing.gateBias = true }
        o.routing = routingFlags.applied(to: o.routing)
        guard o.topK <= o.experts else {
            throw UsageError("--top-k \(o.topK) is more than --experts \(o.experts)")
        }
        do { try o.routing.validate(experts: o.experts) } catch { throw UsageError("\(error)") }
        if o.seeds != nil && (o.resume != nil || o.initFrom != nil || o.command == "ablate") {
            throw UsageError("--seeds trains every seed from scratch: it cannot be combined with --init, --resume or ablate")
        }
        // A registered router reports its own k (a top-1 one: 1, whatever --top-k said).
        o.routing = o.routing.resolvingRegisteredRouter(experts: o.experts, modelDim: o.hidden)
        if o.command == "ablate" && (o.resume != nil || o.initFrom != nil) {
            throw UsageError("ablate trains every configuration from scratch: --init and --resume do not apply")
        }
        guard o.resume == nil || o.initFrom == nil else {
            throw UsageError("--init and --resume cannot be used together")
        }
        if o.resume != nil && o.model == "both" {
            throw UsageError("--resume continues one model: add --model moe or --model dense")
        }
        return o
    }

    var outDirectory: String { out ?? (command == "ablate" ? "runs/mnist-moe-ablate" : "runs/mnist-moe") }

    /// "0-4" or "0,3,7" (or a mix, "0-2,9"): at most 100 distinct seeds, in the order given.
    static func parseSeeds(_ text: String) throws -> [UInt64] {
        var seeds: [UInt64] = []
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            let ends = part.split(separator: "-", omittingEmptySubsequences: false)
            guard (1...2).contains(ends.count), let lo = UInt64(ends[0]), let hi = UInt64(ends.last!), lo <= hi,
                  hi - lo < 100 else {
                throw UsageError("--seeds must be a list like 0-4 or 0,3,7 (non-negative integers, ranges low-high), got '\(text)'")
            }
            for s in lo...hi where !seeds.contains(s) { seeds.append(s) }
            guard seeds.count <= 100 else { throw UsageError("--seeds lists more than 100 seeds: '\(text)'") }
        }
        return seeds
    }

    /// The configuration as it goes into summary.json.
    var json: [String: Any] {
        ["train_size": trainSize, "test_size": 10_000, "epochs": epochs, "batch_size": batchSize,
         // Through their decimal text, so 0.1 is written 0.1, not 0.10000000149011612.
         "lr": Double("\(learningRate)")!, "aux_weight": Double("\(auxWeight)")!, "experts": experts, "top_k": topK,
         "routing": routing.json,
         "hidden": hidden, "expert_hidden": expertHidden, "model": model, "seed": seed, "threads": threads,
         "shuffle": shuffle, "optimizer": "adam", "variant": variant.rawValue, "normalize": normalize.rawValue,
         "subset": subset.rawValue, "seeds": seeds ?? [seed],
         "pixels": normalize == .none ? "x / 255" : "(x / 255 - 0.1307) / 0.3081"]
    }
}

