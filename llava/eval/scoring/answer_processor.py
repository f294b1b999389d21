"""EvalAI answer normalisation, reproduced with its quirks, and the VQA accuracy formula (docs/pipeline.md,
'EvalAI answer normalisation')."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Sequence

# Fixed VQA contraction map (keys with capitals can never match after lowercasing; kept as in the reference).
CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's",
    "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll",
    "let's": "let's", "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're",
    "theres": "there's", "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't",
    "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll",
    "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}
NUMBER_MAP: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
ARTICLES = ("a", "an", "the")
PUNCTUATIONS = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`",
                ",", "?", "!")
# "(?!<=\d)" is a negative *lookahead* for the literal "<=" + digit (a typo kept from the reference).
PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
COMMA_STRIP = re.compile(r"(?<=\d)(\,)+(?=\d)")


class EvalAIAnswerProcessor:
    """Callable normaliser identical to the EvalAI / LLaVA `m4c_evaluator` answer processor."""

    def word_tokenize(self, word: str) -> str:
        """Lowercase, drop ',' and '?', split off "'s", strip."""
        word = word.lower().replace(",", "").replace("?", "").replace("'s", " 's")
        return word.strip()

    def process_punctuation(self, in_text: str) -> str:
        """Delete or space out punctuation, then remove (at most 32) periods not followed by a digit."""
        out_text = in_text
        for p in PUNCTUATIONS:
            if (p + " " in in_text or " " + p in in_text) or re.search(COMMA_STRIP, in_text) is not None:
                out_text = out_text.replace(p, "")
            else:
                out_text = out_text.replace(p, " ")
        # Quirk: re.UNICODE (== 32) is passed as the *count* argument.
        return PERIOD_STRIP.sub("", out_text, re.UNICODE)

    def process_digit_article(self, in_text: str) -> str:
        """Map number words to digits, drop articles, expand contractions, rejoin with single spaces."""
        words = [NUMBER_MAP.get(w, w) for w in in_text.lower().split()]
        words = [w for w in words if w not in ARTICLES]
        return " ".join(CONTRACTIONS.get(w, w) for w in words)

    def __call__(self, item: str) -> str:
        """Normalise one answer string."""
        item = self.word_tokenize(item)
        item = item.replace("\n", " ").replace("\t", " ").strip()
        item = self.process_punctuation(item)
        return self.process_digit_article(item)


def vqa_accuracy(prediction: str, gt_answers: Sequence[str],
                 processor: Callable[[str], str] | None = None) -> float:
    """Mean over the leave-one-out annotator subsets of min(1, #matches/3), in [0, 1].

    With ``processor`` (e.g. ``EvalAIAnswerProcessor()``) the prediction and every answer are normalised
    first, as the TextVQA evaluator does; without it strings are compared as given.
    """
    if not gt_answers:
        raise ValueError("vqa_accuracy needs at least one ground-truth answer")
    if processor is not None:
        prediction = processor(prediction)
        gt_answers = [processor(a) for a in gt_answers]
    total_matches = sum(a == prediction for a in gt_answers)
    accs = []
    for ans in gt_answers:
        matches = total_matches - (ans == prediction)
        accs.append(min(1.0, matches / 3))
    return sum(accs) / len(accs)


def main(argv: list[str] | None = None) -> None:
    """CLI: print the normalised form of each argument (and its VQA accuracy against --gt answers)."""
    ap = argparse.ArgumentParser(
        description="EvalAI answer normalisation (docs/pipeline.md, 'EvalAI answer normalisation').")
    ap.add_argument("answers", nargs="+", help="raw answer strings")
    ap.add_argument("--gt", nargs="*", default=None, help="ground-truth answers (normalised too)")
    args = ap.parse_args(argv)
    proc = EvalAIAnswerProcessor()
    for a in args.answers:
        line = f"{a!r} -> {proc(a)!r}"
        if args.gt:
            line += f"  vqa_acc={vqa_accuracy(a, args.gt, proc):.4f}"
        print(line)


if __name__ == "__main__":
    main()
