"""Built-in vocabularies for the synthetic tasks.

Kept in the package (not fetched, not read from the system) so that a seed produces the same
samples on every machine and every Python version.
"""

from __future__ import annotations

# Common English words: needle keys, common-words lists, and the pool the distractors come from.
WORDS: tuple[str, ...] = tuple(
    """
    apple river stone garden window candle basket bridge forest island mountain valley ocean
    desert meadow harbor castle tower village market temple palace cottage cabin barn fence
    ladder hammer needle thread button pocket jacket blanket pillow mirror bottle kettle spoon
    plate bowl table chair shelf drawer lamp clock bell drum flute violin piano guitar trumpet
    paper pencil letter ticket stamp coin wallet carpet curtain ribbon rope chain anchor sail
    wagon wheel engine rocket planet comet star moon cloud storm thunder rain snow frost breeze
    sunset shadow flame ember smoke feather shell pebble sand cliff cave tunnel canyon glacier
    lake pond stream fountain orchard vineyard field prairie jungle swamp tiger lion zebra
    giraffe monkey rabbit fox wolf bear deer horse donkey goat sheep camel eagle falcon owl
    parrot pigeon swan duck goose salmon shark whale dolphin turtle frog lizard spider beetle
    butterfly bee ant snail lemon orange banana cherry grape melon peach pear plum carrot potato
    tomato onion garlic pepper bread butter cheese honey sugar salt flour rice pasta soup salad
    coffee tea milk juice cookie cake pie muffin pancake doctor farmer baker painter sailor
    pilot teacher singer dancer writer hunter builder soldier captain king queen prince wizard
    giant dragon robot ghost angel pirate knight monk nurse judge red blue green yellow purple
    silver golden brown black white pink gray bright quiet gentle brave clever happy lucky
    proud swift calm bold eager fierce jolly kind lively merry noble polite shy silly sleepy
    tiny huge ancient modern hidden frozen wooden rusty shiny dusty sunny windy cloudy rainy
    sweet bitter sour spicy fresh warm cold soft smooth rough heavy light dark early late
    simple strange famous secret broken empty crowded distant narrow round square sharp
    wild young running jumping singing dancing reading writing sleeping dreaming flying
    swimming climbing walking talking laughing thinking cooking painting building hiding
    winter summer autumn spring morning evening midnight holiday journey voyage adventure
    puzzle riddle velvet story poem song dream memory promise wonder mystery treasure
    picture compass lantern saddle helmet shield sword arrow crown throne banner
    """.split()
)

FIRST_NAMES: tuple[str, ...] = tuple(
    """
    Adam Alice Amelia Andrew Anna Arthur Beatrice Benjamin Bernard Camila Carl Caroline Cecilia
    Charles Clara Daniel Diana Dominic Dorothy Edgar Edith Edward Elena Elias Eliza Emil Emma
    Ernest Esther Felix Fiona Frances Frank Gabriel Grace Gregory Hannah Harold Helen Henry Hugo
    Ida Irene Isaac Ivan Jack Jane Jasper Joan Jonas Julia Julian Karen Kevin Laura Leo Lidia
    Linus Lucy Luke Mabel Marco Margaret Martin Matilda Max Miriam Nadia Nathan Nina Noah Olga
    Oliver Oscar Paula Peter Philip Quentin Rachel Ralph Rita Robert Rosa Samuel Sara Simon
    Sophia Stella Thomas Tobias Ursula Victor Vera Walter Wendy Xavier Yara Yusuf Zoe
    """.split()
)

LAST_NAMES: tuple[str, ...] = tuple(
    """
    Abbott Adler Alvarez Anders Archer Baker Barlow Becker Bishop Blake Bowen Brandt Brennan
    Carter Castillo Chambers Clarke Collins Conrad Crane Dalton Dawson Delgado Dixon Doyle
    Drummond Ellison Emerson Evans Farrell Fischer Fletcher Foster Garner Gibson Graves Hale
    Hansen Harper Hayes Holland Hoffman Hughes Ingram Jensen Keller Kemp Klein Lambert Lang
    Larsen Lawson Lindqvist Lowell Madsen Marsh Mercer Meyer Moreno Morrow Nash Nielsen Novak
    Olsen Ortega Parker Pearce Porter Quinn Ramos Reed Reyes Rhodes Russo Salazar Sandoval
    Schmidt Shaw Sinclair Sloan Stone Sutton Tanaka Thornton Tucker Turner Vance Vargas Wagner
    Walsh Warren Weber Whitman Wolfe Yates Young Zimmer
    """.split()
)

CITIES: tuple[str, ...] = tuple(
    """
    Amsterdam Athens Auckland Bangkok Barcelona Berlin Bogota Boston Brussels Budapest Cairo
    Calgary Chicago Copenhagen Dakar Denver Dublin Edinburgh Florence Geneva Glasgow Hamburg
    Helsinki Istanbul Jakarta Kyoto Lagos Lima Lisbon Liverpool Madrid Manila Marseille
    Melbourne Milan Montreal Moscow Munich Nairobi Naples Oslo Ottawa Paris Perth Porto Prague
    Quito Riga Rome Santiago Seattle Seoul Sydney Tallinn Toronto Valencia Vienna Warsaw Zurich
    """.split()
)

OCCUPATIONS: tuple[str, ...] = tuple(
    """
    architect astronomer baker banker biologist carpenter chemist chef dentist designer
    economist editor electrician engineer farmer firefighter florist geologist historian
    journalist lawyer librarian locksmith mechanic musician nurse pharmacist photographer
    physicist pilot plumber potter sculptor surgeon tailor translator veterinarian weaver
    """.split()
)

HOBBIES: tuple[str, ...] = tuple(
    """
    chess gardening fishing painting sailing hiking knitting photography pottery cycling
    birdwatching astronomy baking climbing rowing woodworking calligraphy archery skating
    """.split()
)

# The haystack of the synthetic needle tasks: plain sentences repeated in order, so that nothing
# in it competes with the needle for the model's attention.
FILLER_SENTENCES: tuple[str, ...] = (
    "The river runs past the old mill.",
    "The hills are quiet in the morning.",
    "Birds sing in the tall trees.",
    "A light wind moves across the field.",
    "The day goes on as it always has.",
)
