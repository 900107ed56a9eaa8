"""Short, varied chat questions for greedy generation with a small instruction-tuned model.

Each prompt is self-contained and answerable in a few sentences.
"""

CHAT_QUESTIONS: list[str] = [
    "What is the capital of France?", "Explain photosynthesis in one sentence.",
    "Write a haiku about the sea.", "What is 17 times 23?", "Name three primary colors.",
    "Who wrote Romeo and Juliet?", "What does a CPU do?", "Give me a tip for better sleep.",
    "Translate 'good morning' into Spanish.", "What is the boiling point of water?",
    "Describe a cat to someone who has never seen one.", "Why is the sky blue?",
    "List the planets of the solar system.", "What is machine learning?",
    "Summarize the plot of Cinderella.", "How do vaccines work?",
    "What is the difference between weather and climate?", "Write a limerick about a dog.",
    "What is a prime number?", "How many days are in a leap year?",
    "Suggest a name for a coffee shop.", "What causes earthquakes?",
    "Explain recursion to a child.", "What is the largest ocean?",
    "Give two reasons to learn a second language.", "What is gravity?",
    "Write one sentence about autumn.", "How does a rainbow form?",
    "What is the speed of light?", "Name a famous painting and its painter.",
    "What is an atom?", "How do plants drink water?",
    # Science
    "Why do objects float in water?", "What is the chemical formula for table salt?",
    "How does a magnet attract iron?", "What is the difference between a virus and bacteria?",
    "Why does the moon have phases?", "What is DNA made of?", "How do stars produce light?",
    # Geography
    "What is the longest river in Africa?", "Which country has the largest population?",
    "Name the seven continents.", "Where is Mount Kilimanjaro located?",
    "Which desert is the largest hot desert?", "What language is spoken in Brazil?",
    "Name two countries that border Canada.",
    # History
    "Who was the first person to walk on the moon?", "When did World War II end?",
    "Why were the Egyptian pyramids built?", "Who invented the printing press?",
    "What was the Roman Colosseum used for?", "Who painted the ceiling of the Sistine Chapel?",
    "What was the Industrial Revolution?", "Why did the Titanic sink?",
    # Arithmetic
    "What is 12 plus 29?", "What is 144 divided by 12?", "What is 15 percent of 80?",
    "What is the square root of 81?", "If I have 9 apples and eat 4, how many remain?",
    "What is 7 cubed?", "Add 36 and 47, then subtract 19.",
    # Everyday advice
    "How can I stay focused while studying?", "Give me three tips for saving money.",
    "How should I prepare for a job interview?", "What is a good way to start a conversation?",
    "How can I keep my houseplants healthy?", "Suggest a quick way to tidy a messy room.",
    "How do I remove a coffee stain from a shirt?", "What should I pack for a weekend trip?",
    # Language and translation
    "Translate 'thank you very much' into French.", "How do you say 'cat' in German?",
    "What is the plural of the word mouse?", "Give me a synonym for the word happy.",
    "Translate 'where is the library' into Italian.", "What is the opposite of generous?",
    "Use the word 'serendipity' in a sentence.", "What is the past tense of the verb swim?",
    # Definitions
    "What does the word ephemeral mean?", "Define the term democracy in simple words.",
    "What is an ecosystem?", "What is the meaning of the word nostalgia?",
    "What is inflation in economics?", "Define a metaphor and give an example.",
    "What is a peninsula?", "What does biodegradable mean?",
    # Short creative writing
    "Write a haiku about a snowy mountain.", "Write a limerick about a forgetful robot.",
    "Write one sentence describing a busy city street.",
    "Write a two-line rhyming poem about the moon.", "Invent a name for a friendly dragon.",
    "Write one sentence that begins a mystery story.", "Write a short toast for a birthday.",
    # Cooking
    "How do I boil an egg perfectly?", "What ingredients are needed for pancakes?",
    "How long should I cook plain white rice?",
    "What is the difference between baking and roasting?",
    "Suggest a simple vegetarian dinner idea.", "How do I make a basic salad dressing?",
    "Why does bread dough need to rise?", "What spices go well with roasted carrots?",
    # Technology
    "What is the difference between RAM and storage?", "How does Wi-Fi send data?",
    "What is a web browser?", "Explain what an operating system does.",
    "What is cloud computing?", "Why should I use strong passwords?",
    "What does HTML stand for?", "How does a GPS receiver find its location?",
    # Animals
    "Why do birds migrate in winter?", "How do bees make honey?",
    "What is the fastest land animal?", "Why do cats purr?",
    "How long can a camel go without water?", "What do pandas mainly eat?",
    "How do fish breathe underwater?", "Why do zebras have stripes?",
    # Health
    "How much water should an adult drink daily?", "Why is regular exercise good for you?",
    "What are common symptoms of the flu?", "How can I reduce stress after work?",
    # Sports
    "How many players are on a soccer team?", "Explain the basic rules of tennis.",
    "How often are the Summer Olympic Games held?", "What is a marathon?",
    # Music
    "How many keys does a standard piano have?", "Who composed the Moonlight Sonata?",
    "What is the difference between rhythm and melody?",
    "Name three instruments found in an orchestra.",
]
