#!/usr/bin/env python3
"""Writes the golden fixture the Rust VADER port is checked against.

Usage (from the repository root, with the reference implementation installed):

    pip install vaderSentiment==3.3.2
    python3 ml-models/tools/gen_vader_golden.py

Each line of ml-models/tests/fixtures/vader_golden.jsonl holds one text and the four numbers
`SentimentIntensityAnalyzer.polarity_scores` returns for it, already rounded by Python.
"""

import importlib.metadata
import json
import pathlib

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

# the Rust port (ml-models/src/lexicon.rs) mirrors exactly this release
EXPECTED_VERSION = "3.3.2"

SENTENCES = [
    # the examples shipped with vaderSentiment's own demo
    "VADER is smart, handsome, and funny.",
    "VADER is smart, handsome, and funny!",
    "VADER is very smart, handsome, and funny.",
    "VADER is VERY SMART, handsome, and FUNNY.",
    "VADER is VERY SMART, handsome, and FUNNY!!!",
    "VADER is VERY SMART, uber handsome, and FRIGGIN FUNNY!!!",
    "VADER is not smart, handsome, nor funny.",
    "The book was good.",
    "At least it isn't a horrible book.",
    "The book was only kind of good.",
    "The plot was good, but the characters are uncompelling and the dialog is not great.",
    "Today SUX!",
    "Today only kinda sux! But I'll get by, lol",
    "Make sure you :) or :D today!",
    "Catch utf-8 emoji such as 💘 and 💋 and 😁",
    "Not bad at all",
    "Sentiment analysis has never been good.",
    "Sentiment analysis has never been this good!",
    "Most automated sentiment analysis tools are shit.",
    "With VADER, sentiment analysis is the shit!",
    "Other sentiment analysis tools can be quite bad.",
    "On the other hand, VADER is quite bad ass",
    "VADER is such a badass!",
    "Without a doubt, excellent idea.",
    "Roger Dodger is one of the most compelling variations on this theme.",
    "Roger Dodger is at least compelling as a variation on the theme.",
    "Roger Dodger is one of the least compelling variations on this theme.",
    "Not such a badass after all.",
    "Without a doubt, an excellent idea.",
    # negation, including "n't" words and the "no" rules
    "I don't like this movie.",
    "This isnt good at all.",
    "He wasn't happy, and she couldn't care less.",
    "There is no good reason for this.",
    "No, good things happen.",
    "no no no bad",
    "There was no doubt or fear in her voice.",
    "I never said it was bad.",
    "The service was never so good.",
    "The weather has never been this terrible.",
    "Without doubt a wonderful evening.",
    # boosters, dampeners and "kind of"
    "The food was extremely good.",
    "The food was very very good.",
    "It was barely acceptable.",
    "It was kind of nice.",
    "It was sort of bad, somewhat boring, and just enough fun.",
    "I kinda love it.",
    "That was EXTREMELY good, honestly.",
    # ALL-CAPS emphasis with and without mixed case
    "I LOVE it",
    "GREAT JOB EVERYONE",
    "This is GREAT but the ending was TERRIBLE",
    # contrastive "but", including the repeated-value quirk of Python's list.index
    "The hotel was nice but the staff was rude.",
    "I was glad to come but the food was alright",
    "Good, good, but good.",
    "but",
    # "least"
    "least good",
    "The least helpful person.",
    "At the very least good enough.",
    # special idioms and sentiment-laden idioms (the latter are dead code in 3.3.2)
    "This new phone is the bomb",
    "That party last night was the bomb!",
    "His new plan does not cut the mustard.",
    "Break a leg tonight, my friend.",
    "I am feeling under the weather today.",
    "Yeah right, like that would ever work.",
    "This cake is to die for",
    "That contract was the kiss of death for the company.",
    "We waited at the bus stop.",
    # question and exclamation marks
    "Is this good??",
    "Is this good????",
    "What a great day!!!!!!",
    "This is terrible!",
    "Really?",
    # emoticons and emoji
    "I am happy :)",
    "I am sad :-(",
    ":D",
    "Great work 😀😀",
    "good😀bad",
    "I ❤ you",
    "Copyright © 2024 Acme",
    "😡",
    # plain neutral text and multiple sentences
    "The meeting is at 3pm in room 204.",
    "The cat sat on the mat.",
    "I went to the store. It was closed. I was really angry! Tomorrow will be better.",
    "It was one of the worst movies I've seen, despite good reviews. Unbelievably bad acting!!",
    # tokenization corners: short tokens keep their punctuation, odd whitespace, unicode
    "ok. fine.",
    "Good\tday\nto you\u00a0all",
    "good\x1cbad",
    "Café au lait is great, naïve but lovely.",
    "ΣΑΣ GOOD",
    "İstanbul is a nice city",
    "素晴らしい good",
    "!!!",
    "???",
    "",
    "   ",
    "a",
]


def main():
    installed = importlib.metadata.version("vaderSentiment")
    if installed != EXPECTED_VERSION:
        raise SystemExit(f"need vaderSentiment {EXPECTED_VERSION}, found {installed}")
    analyzer = SentimentIntensityAnalyzer()
    root = pathlib.Path(__file__).resolve().parent.parent
    fixture_path = root / "tests" / "fixtures" / "vader_golden.jsonl"
    fixture_path.parent.mkdir(parents=True, exist_ok=True)
    with fixture_path.open("w", encoding="utf-8") as fixture:
        for text in SENTENCES:
            scores = analyzer.polarity_scores(text)
            record = {"text": text, **scores}
            fixture.write(json.dumps(record, ensure_ascii=False) + "\n")
    print(f"wrote {len(SENTENCES)} sentences to {fixture_path}")


if __name__ == "__main__":
    main()
