use crate::{InferenceError, SentimentModel, SentimentScore};
#[derive(Debug, Default)]
pub struct VaderModel;
impl VaderModel { pub fn new() -> Self { VaderModel } }
impl SentimentModel for VaderModel {
    fn engine(&self) -> &str { "lexicon" }
    fn version(&self) -> &str { "stub" }
    fn predict(&mut self, _texts: &[String]) -> Result<Vec<SentimentScore>, InferenceError> { Err(InferenceError::Failed("stub".into())) }
}
