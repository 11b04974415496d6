"""Planted documents for the fastText rules' tests and benchmark: English and non-English prose (hand-written
sentences, recombined), and two document styles a classifier can learn (``encyclopedic`` vs ``spam``).

Every document is a seeded recombination, so they are distinct (no dedupe interference) and reproducible.
"""
from __future__ import annotations

import random

SENTENCES = {
    "en": [
        "The river flows slowly through the old town before it reaches the sea.",
        "Most of the houses in this street were built at the end of the nineteenth century.",
        "She spent the whole afternoon reading in the garden while the children played.",
        "Scientists have studied the behaviour of these birds for more than thirty years.",
        "The committee will publish its final report early next spring.",
        "After the storm, the farmers worked together to repair the damaged fences.",
        "Our teacher explained the difference between weather and climate with simple examples.",
        "The museum is open every day except Monday, and entry is free for students.",
        "He wrote several letters to his brother, but none of them ever arrived.",
        "The new bridge will connect the two villages and shorten the journey considerably.",
        "Many people believe that a good breakfast is the most important meal of the day.",
        "The library keeps a large collection of maps that were drawn by hand.",
    ],
    "de": [
        "Der Fluss fließt langsam durch die Altstadt, bevor er das Meer erreicht.",
        "Die meisten Häuser in dieser Straße wurden am Ende des neunzehnten Jahrhunderts gebaut.",
        "Sie verbrachte den ganzen Nachmittag lesend im Garten, während die Kinder spielten.",
        "Wissenschaftler untersuchen das Verhalten dieser Vögel seit mehr als dreißig Jahren.",
        "Der Ausschuss wird seinen Abschlussbericht im nächsten Frühjahr veröffentlichen.",
        "Nach dem Sturm reparierten die Bauern gemeinsam die beschädigten Zäune.",
    ],
    "fr": [
        "La rivière traverse lentement la vieille ville avant de rejoindre la mer.",
        "La plupart des maisons de cette rue ont été construites à la fin du dix-neuvième siècle.",
        "Elle a passé tout l'après-midi à lire dans le jardin pendant que les enfants jouaient.",
        "Les scientifiques étudient le comportement de ces oiseaux depuis plus de trente ans.",
        "Le comité publiera son rapport final au début du printemps prochain.",
        "Après la tempête, les agriculteurs ont réparé ensemble les clôtures endommagées.",
    ],
    "es": [
        "El río atraviesa lentamente el casco antiguo antes de llegar al mar.",
        "La mayoría de las casas de esta calle se construyeron a finales del siglo diecinueve.",
        "Pasó toda la tarde leyendo en el jardín mientras los niños jugaban.",
        "Los científicos estudian el comportamiento de estas aves desde hace más de treinta años.",
        "El comité publicará su informe final a principios de la próxima primavera.",
        "Después de la tormenta, los agricultores repararon juntos las cercas dañadas.",
    ],
}

ENCYCLOPEDIC = ("the species genus family habitat population region century treaty dynasty province river "
                "mountain climate research university observed described classified published according "
                "historian evidence documented territory archaeological ancient medieval structure "
                "composed located approximately consists primarily").split()
SPAM = ("buy cheap best deal click here now free shipping discount offer limited casino bonus win money fast "
        "online pills order today guaranteed lowest price sale hot amazing subscribe promo code exclusive "
        "deals visit website").split()


def prose(lang: str, rng: random.Random, n_sentences: int = 6) -> str:
    """``n_sentences`` sentences of one language, drawn with replacement, then shuffled."""
    return " ".join(rng.choice(SENTENCES[lang]) for _ in range(n_sentences))


def styled(style: str, rng: random.Random, n_words: int = 80) -> str:
    """A document of one planted style: random words of its vocabulary in sentences of 10."""
    vocab = ENCYCLOPEDIC if style == "encyclopedic" else SPAM
    words = [rng.choice(vocab) for _ in range(n_words)]
    return " ".join(" ".join(words[i:i + 10]).capitalize() + "." for i in range(0, n_words, 10))
