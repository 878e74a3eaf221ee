"""A small English word list and a deterministic sentence generator (chapter 1, text for the TTS speakers).

The built-in speech source needs varied text without a corpus download; sentences are random word sequences, which
is enough for counting speakers (the task never looks at what is said).
"""

from __future__ import annotations

import numpy as np

WORDS: tuple[str, ...] = tuple("""
a about above across after again against air all almost along already also always am among an and animal another
answer any anything apple are area around as ask at away baby back bad bag ball bank be beautiful because bed been
before began begin behind being believe below best better between big bird black blue boat body book both bottom
box boy bread break bring brother brown build building burn business but buy by call came can car care carry case
cat catch cause center certain chair change child children church city class clean clear close cloud cold color
come common company complete could country course cover cross cry cup cut dark day dead deep did different dinner
do doctor does dog done door down draw dream dress drink drive dry during each early earth east easy eat edge egg
eight either else end enough even evening ever every example eye face fact fall family far farm fast father fear
feel feet few field fight fill final find fine finger fire first fish five floor flower fly follow food foot for
forest form forward four free friend from front fruit full game garden gave get girl give glass go gold good got
government great green ground group grow half hand happen happy hard has have he head hear heart heavy help her
here high hill him his history hold hole home hope horse hot hour house how however hundred husband i ice idea if
important in inside instead interest into iron is island it its job join just keep kept kind king kitchen knew
know lake land language large last late laugh law lay lead learn least leave left leg less let letter life light
like line list listen little live long look lost lot love low machine made make man many map mark market matter may
me mean measure meet men middle might mile milk mind minute miss moment money month moon more morning most mother
mountain mouth move much music must my name nation near need never new next night nine no north nose not nothing
notice now number object ocean of off office often oil old on once one only open or order other our out over own
page paint paper part party pass past pay people perhaps person picture piece place plan plant play please point
poor possible power press pretty problem produce pull push put question quick quiet rain raise ran reach read
ready real reason red remember rest rich ride right river road rock room round rule run safe said same sat save
saw say school science sea season seat second see seem sell send sentence seven several shall shape she ship shop
short should show side sign simple since sing sister sit six size sky sleep slow small smile snow so soft some son
song soon sound south space speak special spring square stand star start station stay step still stone stop store
story street strong student study such summer sun sure surface table take talk tall teacher tell ten than that the
their them then there these they thing think third this those though thought thousand three through time to today
together told tomorrow too took top touch toward town train tree true try turn twelve two under understand until
up upon us use usually valley very visit voice wait walk wall want war warm was watch water way we wear weather
week well went were west what wheel when where which while white who whole why wide wife will wind window winter
wish with without woman wonder wood word work world would write year yellow yes yesterday yet you young your
""".split())


def make_sentence(rng: np.random.Generator, min_words: int = 6, max_words: int = 14) -> str:
    """A random sentence of ``min_words``..``max_words`` words drawn from :data:`WORDS` with ``rng``."""
    n = int(rng.integers(min_words, max_words + 1))
    words = [WORDS[i] for i in rng.integers(0, len(WORDS), size=n)]
    # A comma somewhere gives the synthesiser a phrase break, as in read speech.
    if n > 7:
        words[int(rng.integers(3, n - 3))] += ","
    return " ".join(words).capitalize() + "."
