//! The ONNX sentiment engine against the real model and ONNX Runtime.
//!
//! `make runtime` puts the runtime under `ml-models/cache/`, and the model ships in
//! `ml-models/models/` (or set `ORT_DYLIB_PATH` and `BULWARK_MODEL_DIR`); when either is absent
//! these tests fail, they never skip. The SST-2 dev
//! set is read from `../shared/data/sst2/dev.txt`, beside the project.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use bulwark_ml::{
    ModelLoadError, OnnxModel, OnnxModelParams, SentimentLabel, SentimentModel, evaluate,
    locate_model_dir, locate_runtime, read_labeled,
};
use sha2::{Digest, Sha256};

/// The sha256 of `model.onnx` in `sentiment-minilm-sst2` v1, as its `SHA256SUMS` lists it.
const MODEL_SHA256: &str = "2dba2ac240d4fa05f13ade5c4288260665d686c1831b9fd2d17e6813eda1e389";

/// Texts of varied lengths, from 7 tokens to over the 128-token limit.
const VARIED_TEXTS: [&str; 20] = [
    "one long string of cliches .",
    "it 's slow -- very , very slow .",
    "for starters , the story is just too slim .",
    "forced , familiar and thoroughly condescending .",
    "fun , flip and terribly hip bit of cinematic entertainment .",
    "the film tunes into a grief that could lead a man across centuries .",
    "not as bad as i expected .",
    "one of the more intelligent children 's movies to hit theaters this year .",
    "brilliantly explores the conflict between following one 's heart and following the demands of tradition .",
    "a movie that successfully crushes a best selling novel into a timeframe that mandates that you avoid the godzilla sized soda .",
    "this movie is something of an impostor itself , stretching and padding its material in a blur of dead ends and distracting camera work .",
    "two hours fly by -- opera 's a pleasure when you do n't have to endure intermissions -- and even a novice to the form comes away exhilarated .",
    "an operatic , sprawling picture that 's entertainingly acted , magnificently shot and gripping enough to sustain most of its 170-minute length .",
    "the movie is dawn of the dead crossed with john carpenter 's ghosts of mars , with zombies not as ghoulish as the first and trains not as big as the second .",
    "the quality of the art combined with the humor and intelligence of the script allow the filmmakers to present the biblical message of forgiveness without it ever becoming preachy or syrupy .",
    "pumpkin means to be an outrageous dark satire on fraternity life , but its ambitions far exceed the abilities of writer adam larson broder and his co-director , tony r. abrams , in their feature debut .",
    "it 's one of those baseball pictures where the hero is stoic , the wife is patient , the kids are as cute as all get-out and the odds against success are long enough to intimidate , but short enough to make a dream seem possible .",
    "I LOVED it!!! Best. Movie. Ever. 😍",
    "meh",
    "a gorgeous , witty , seductive movie . a gorgeous , witty , seductive movie . a gorgeous , witty , seductive movie . a gorgeous , witty , seductive movie . a gorgeous , witty , seductive movie . a gorgeous , witty , seductive movie . a gorgeous , witty , seductive movie . a gorgeous , witty , seductive movie . a gorgeous , witty , seductive movie . a gorgeous , witty , seductive movie . a gorgeous , witty , seductive movie . a gorgeous , witty , seductive movie . a gorgeous , witty , seductive movie . a gorgeous , witty , seductive movie . a gorgeous , witty , seductive movie . but the ending is awful .",
];

fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("ml-models sits inside the workspace")
        .to_path_buf()
}

fn params() -> OnnxModelParams {
    let env: HashMap<String, String> = std::env::vars().collect();
    OnnxModelParams {
        model_dir: locate_model_dir(&env, &project_root()),
        runtime_path: locate_runtime(&env, &project_root()),
        intra_op_threads: 2,
    }
}

fn params_for(model_dir: &Path) -> OnnxModelParams {
    OnnxModelParams {
        model_dir: model_dir.to_path_buf(),
        ..params()
    }
}

fn load() -> OnnxModel {
    OnnxModel::load(&params()).unwrap_or_else(|error| panic!("{error}"))
}

fn owned(texts: &[&str]) -> Vec<String> {
    texts.iter().map(|text| (*text).to_owned()).collect()
}

/// Copies the model's files into a fresh temporary directory a test may break.
fn copy_model_dir() -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    for entry in fs::read_dir(params().model_dir).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), copy.path().join(entry.file_name())).unwrap();
    }
    copy
}

/// Returns the log-odds of a probability.
fn logit(probability: f32) -> f32 {
    (probability / (1.0 - probability)).ln()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Proves the model loads from the located directory and reports its engine, its version and
/// the checksum of the file it loaded.
#[test]
fn good_model_loads_and_names_itself() {
    let model = load();
    assert_eq!(model.engine(), "onnx");
    assert_eq!(model.version(), "sentiment-minilm-sst2-v1+2dba2ac2");
    assert_eq!(model.model_sha256(), MODEL_SHA256);
}

/// Proves clear sentences get the expected label and the probabilities pinned from the first
/// run (Python onnxruntime 1.31.1 with tokenizers 0.23 reproduces them to 1e-6 on the same
/// CPU) within 0.5 in logit, and that the other score fields derive from `p(positive)`. The
/// tolerance is the spread of the int8 kernels across instruction sets: a CPU with AVX-512 VNNI
/// and one with AVX2 alone (an AMD EPYC seen here) round the quantized products differently,
/// up to 0.26 apart in logit on these sentences (0.0695 against 0.0594 at the widest).
#[test]
fn golden_predictions() {
    let golden: [(&str, SentimentLabel, f32); 6] = [
        (
            "a gorgeous , witty , seductive movie .",
            SentimentLabel::Positive,
            0.999_703,
        ),
        (
            "a decent film , if a little long .",
            SentimentLabel::Positive,
            0.992_584,
        ),
        (
            "it 's not a great movie , but it is entertaining .",
            SentimentLabel::Positive,
            0.995_485,
        ),
        (
            "a boring , pointless mess .",
            SentimentLabel::Negative,
            0.001_430,
        ),
        (
            "the worst film i have seen in years .",
            SentimentLabel::Negative,
            0.003_789,
        ),
        (
            "the acting is fine but the story drags .",
            SentimentLabel::Negative,
            0.069_474,
        ),
    ];
    let mut model = load();
    let texts: Vec<String> = golden
        .iter()
        .map(|(text, _, _)| (*text).to_owned())
        .collect();
    let scores = model.predict(&texts).unwrap();
    assert_eq!(scores.len(), golden.len());
    for ((text, label, positive_probability), score) in golden.iter().zip(&scores) {
        assert_eq!(score.label, *label, "{text}");
        assert!(
            (logit(score.positive_probability) - logit(*positive_probability)).abs() < 0.5,
            "{text}: p(positive) is {}, expected {positive_probability}",
            score.positive_probability
        );
        let negative_probability = 1.0 - score.positive_probability;
        let expected_score = score.positive_probability - negative_probability;
        assert!((score.score - expected_score).abs() < 1e-6, "{text}");
        let expected_confidence = score.positive_probability.max(negative_probability);
        assert!(
            (score.confidence - expected_confidence).abs() < 1e-6,
            "{text}"
        );
        assert_eq!(score.engine, "onnx");
        assert_eq!(score.model_version, model.version());
    }
}

/// Proves a text scores the same alone as inside a batch of twenty texts of varied lengths,
/// so dynamic batching of concurrent requests never changes anyone's result.
#[test]
fn batching_does_not_change_scores() {
    let mut model = load();
    let texts = owned(&VARIED_TEXTS);
    let batched = model.predict(&texts).unwrap();
    assert_eq!(batched.len(), texts.len());
    for (text, in_batch) in texts.iter().zip(&batched) {
        let alone = model.predict(std::slice::from_ref(text)).unwrap();
        let difference = (alone[0].positive_probability - in_batch.positive_probability).abs();
        assert!(
            difference < 1e-5,
            "{text}: alone and batched differ by {difference}"
        );
        assert_eq!(alone[0].label, in_batch.label, "{text}");
    }
}

/// Proves texts are truncated at 128 tokens: two texts that differ only after the limit score
/// the same, and a text far over the limit is scored rather than rejected.
#[test]
fn long_texts_are_truncated_at_128_tokens() {
    let mut model = load();
    let prefix = "a gorgeous , witty , seductive movie . ".repeat(20);
    let texts = vec![
        format!("{prefix}but the ending is awful and i hated it ."),
        format!("{prefix}and i loved every minute of it ."),
        "good ".repeat(5_000),
    ];
    let scores = model.predict(&texts).unwrap();
    assert_eq!(
        scores[0].positive_probability,
        scores[1].positive_probability
    );
    assert!((0.0..=1.0).contains(&scores[2].positive_probability));
}

/// Proves odd inputs are scored, not failed or panicked on: an empty batch, an empty text,
/// whitespace, emoji and other scripts.
#[test]
fn odd_inputs_are_scored() {
    let mut model = load();
    assert!(model.predict(&[]).unwrap().is_empty());
    let texts = owned(&[
        "",
        "   \n\t",
        "🙂🙂🙂",
        "très bien, 素晴らしい",
        "\u{0}\u{7}",
    ]);
    let scores = model.predict(&texts).unwrap();
    assert_eq!(scores.len(), texts.len());
    for score in scores {
        assert!(
            (0.0..=1.0).contains(&score.positive_probability),
            "{score:?}"
        );
        assert!((0.5..=1.0).contains(&score.confidence), "{score:?}");
    }
}

/// Proves a directory without the model is `MissingModel`, naming the missing file and the
/// way to fix it, and not retryable.
#[test]
fn missing_model_dir_is_missing_model() {
    let empty = tempfile::tempdir().unwrap();
    let absent = empty.path().join("sentiment-minilm-sst2");
    let error = OnnxModel::load(&params_for(&absent)).unwrap_err();
    let ModelLoadError::MissingModel { dir, missing_file } = &error else {
        panic!("expected MissingModel, got {error:?}");
    };
    assert_eq!(dir, &absent);
    assert_eq!(missing_file, "model.onnx");
    assert!(error.to_string().contains("make model"), "{error}");
    assert!(!error.is_retryable());

    let without_manifest = copy_model_dir();
    fs::remove_file(without_manifest.path().join("SHA256SUMS")).unwrap();
    let error = OnnxModel::load(&params_for(without_manifest.path())).unwrap_err();
    assert!(
        matches!(&error, ModelLoadError::MissingModel { missing_file, .. } if missing_file == "SHA256SUMS"),
        "{error:?}"
    );
}

/// Proves a model file with flipped bytes is caught by its checksum before anything parses it.
#[test]
fn corrupted_model_is_checksum_mismatch() {
    let copy = copy_model_dir();
    let model_path = copy.path().join("model.onnx");
    let mut bytes = fs::read(&model_path).unwrap();
    let middle = bytes.len() / 2;
    for byte in &mut bytes[middle..middle + 16] {
        *byte = !*byte;
    }
    fs::write(&model_path, &bytes).unwrap();
    let error = OnnxModel::load(&params_for(copy.path())).unwrap_err();
    let ModelLoadError::ChecksumMismatch {
        file,
        expected,
        actual,
    } = &error
    else {
        panic!("expected ChecksumMismatch, got {error:?}");
    };
    assert_eq!(file, &model_path);
    assert_eq!(expected, MODEL_SHA256);
    assert_eq!(actual, &sha256_hex(&bytes));
    assert!(error.to_string().contains("corrupt"), "{error}");
}

/// Proves a garbage `model.onnx` that its manifest vouches for is `Corrupt`, reported by
/// ONNX Runtime's parser, and not a panic.
#[test]
fn garbage_model_with_matching_manifest_is_corrupt() {
    let copy = copy_model_dir();
    let garbage = b"this is not an onnx graph".repeat(100);
    fs::write(copy.path().join("model.onnx"), &garbage).unwrap();
    let manifest: String = ["model.onnx", "tokenizer.json", "config.json"]
        .iter()
        .map(|name| {
            let bytes = fs::read(copy.path().join(name)).unwrap();
            format!("{}  {name}\n", sha256_hex(&bytes))
        })
        .collect();
    fs::write(copy.path().join("SHA256SUMS"), manifest).unwrap();
    let error = OnnxModel::load(&params_for(copy.path())).unwrap_err();
    let ModelLoadError::Corrupt { file, .. } = &error else {
        panic!("expected Corrupt, got {error:?}");
    };
    assert_eq!(file, &copy.path().join("model.onnx"));
    assert!(!error.is_retryable());
}

/// Proves zero intra-op threads is refused instead of silently meaning "all cores".
#[test]
fn zero_threads_is_invalid() {
    let error = OnnxModel::load(&OnnxModelParams {
        intra_op_threads: 0,
        ..params()
    })
    .unwrap_err();
    assert!(
        matches!(error, ModelLoadError::InvalidParams { .. }),
        "{error:?}"
    );
}

/// Proves the model reaches 85% accuracy on the first 200 SST-2 dev sentences, through
/// `read_labeled` and `evaluate`.
#[test]
fn sst2_dev_accuracy() {
    let dev_path = project_root().join("../shared/data/sst2/dev.txt");
    let data = read_labeled(&dev_path).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(data.len(), 872);
    let mut model = load();
    let report = evaluate(&mut model, &data[..200], 32).unwrap();
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
    assert_eq!(report.count, 200);
    assert_eq!(report.num_neutral, 0);
    assert_eq!(
        report.per_class.positive.count + report.per_class.negative.count,
        200
    );
    assert!(report.accuracy >= 0.85, "accuracy {}", report.accuracy);
    assert_eq!(report.engine, "onnx");
    assert_eq!(report.model_version, model.version());
}
